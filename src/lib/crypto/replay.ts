/**
 * Remembers which message ids an identity has accepted, across runs, so a stored envelope that
 * is published again is refused. One small SQLite file per identity under $MQ_HOME/data (a
 * client-side file: it holds ids, sender names and timestamps only, never payloads). It is always
 * the embedded SQLite (not store.url): it belongs to the receiving machine, and is on the hot path
 * of every message, so statements are prepared once.
 *
 * Bounded by a replay window (e2e.replay_window_ms, default 30 days): each id is kept with the
 * message's authenticated (signed) timestamp, a signed message older than the window is refused
 * outright (tooOld, E_REPLAY_WINDOW), so ids older than the window can be pruned without ever
 * accepting their replay. Unsigned formats (ciphermq, plain) have no authenticated timestamp: their
 * ids are kept with the time they were accepted and pruned the same way, which makes the guard a
 * de-duplication within the window for them (anyone can write such a message anyway).
 *
 * The order used by `mq recv` is: lookup() -> begin() (intent: state 0, with the broker delivery,
 * where the output stood and a batch number) -> write and flush the output -> markWritten() (the
 * batch's number into written_batches: state 1 for all its ids in one row) -> ack.
 * A redelivery (broker flag, same queue and broker message id) of an id in state 1 was written:
 * it is a duplicate to ack quietly. One in state 0 crashed while being written: the --out file
 * tells whether its line is there (then it is a duplicate too) or not (then it is written now);
 * stdout cannot tell, so it goes to the dead-letter queue (E_RECV_IN_DOUBT) rather than be written
 * twice or lost. The same id in another delivery is a replay, refused as before.
 */
import Database from 'better-sqlite3'
import {createHash} from 'node:crypto'
import {join} from 'node:path'

import type {MqHome} from '../config/home.js'
import {ensurePrivateDir} from '../util/fs.js'

export function replayFileName(identity: string): string {
  const safe = /^[A-Za-z0-9._-]{1,64}$/.test(identity) ? identity : createHash('sha256').update(identity).digest('hex').slice(0, 32)
  return `replay-${safe}.db`
}

export interface ReplayEntry {
  messageId: string
  sender?: string | null
  /** ms since the epoch: the message's authenticated timestamp; omitted (unsigned formats) = now */
  timestamp?: number
}

/** What this receiver recorded for an id (see lookup()). */
export interface PriorAcceptance {
  /** `queue NUL broker message id` of the delivery that carried it; null for ids from older versions */
  delivery: string | null
  /** 0: being written when the receiver stopped (in doubt); 1: written */
  state: 0 | 1
  /** the --out file and its size before the batch was written (state 0 recovery) */
  outPath: string | null
  outOffset: number | null
}

/** An accepted message about to be written: its id, and the delivery and output position that record it. */
export interface IntentEntry extends ReplayEntry {
  delivery: string
}

export const DEFAULT_REPLAY_WINDOW_MS = 30 * 86_400_000

/** the clock skew envelope.ts allows between a message's timestamp and its grant's validity */
const GRANT_SKEW_MS = 5 * 60_000

/** How often, at most, recordMany() prunes in a long run (open() always prunes). */
const PRUNE_EVERY_MS = 10 * 60_000

export interface ReplayGuardOptions {
  /** ids older than this are pruned, and signed messages older than this refused (ms) */
  windowMs?: number
  /** the clock (tests) */
  now?: () => number
}

export class ReplayGuard {
  readonly windowMs: number
  readonly now: () => number
  private lastPrune = 0
  private readonly seenStmt: Database.Statement
  private readonly insertStmt: Database.Statement
  private readonly pruneStmt: Database.Statement
  private readonly insertMany: (entries: ReplayEntry[], now: number) => void
  private readonly lookupStmt: Database.Statement
  private readonly beginMany: (entries: IntentEntry[], out: {path?: string; offset?: number}, now: number, batch: number) => void
  private readonly markMany: (entries: IntentEntry[], now: number) => void
  private readonly markBatchStmt: Database.Statement
  private readonly pruneBatchesStmt: Database.Statement
  private readonly grantGetStmt: Database.Statement
  private readonly grantPutStmt: Database.Statement
  private readonly grantPruneStmt: Database.Statement
  /** the batch begin() recorded last and markWritten() has not closed yet */
  private openBatch?: {id: number; entries: IntentEntry[]}
  private nextBatch: number

  private constructor(
    private readonly db: Database.Database,
    readonly identity: string,
    opts: ReplayGuardOptions,
  ) {
    this.windowMs = opts.windowMs ?? DEFAULT_REPLAY_WINDOW_MS
    this.now = opts.now ?? Date.now
    this.seenStmt = db.prepare('SELECT 1 FROM accepted_ids WHERE message_key = ?').pluck()
    // a second acceptance of the same key (possible only from two receivers at once) keeps the later time
    this.insertStmt = db.prepare('INSERT INTO accepted_ids (message_key, sender, accepted_at, ts) VALUES (?, ?, ?, ?) ON CONFLICT (message_key) DO UPDATE SET ts = MAX(ts, excluded.ts)')
    this.pruneStmt = db.prepare('DELETE FROM accepted_ids WHERE ts < ?')
    this.insertMany = db.transaction((entries: ReplayEntry[], now: number) => {
      for (const e of entries) this.insertStmt.run(key(e.messageId, e.sender), e.sender ?? null, now, e.timestamp ?? now)
    })
    this.lookupStmt = db.prepare(
      'SELECT a.delivery, CASE WHEN a.state = 1 OR w.batch IS NOT NULL THEN 1 ELSE 0 END AS state, a.out_path AS outPath, a.out_offset AS outOffset ' +
        'FROM accepted_ids a LEFT JOIN written_batches w ON w.batch = a.batch WHERE a.message_key = ?',
    )
    // state 0 with the batch's number: the batch is written once its number is in written_batches,
    // so marking a batch written is one row, not one update per message
    const beginStmt = db.prepare(
      'INSERT INTO accepted_ids (message_key, sender, accepted_at, ts, delivery, state, out_path, out_offset, batch) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?) ' +
        'ON CONFLICT (message_key) DO UPDATE SET state = 0, delivery = excluded.delivery, out_path = excluded.out_path, out_offset = excluded.out_offset, batch = excluded.batch, ts = MAX(ts, excluded.ts)',
    )
    this.beginMany = db.transaction((entries: IntentEntry[], out: {path?: string; offset?: number}, now: number, batch: number) => {
      for (const e of entries) beginStmt.run(key(e.messageId, e.sender), e.sender ?? null, now, e.timestamp ?? now, e.delivery, out.path ?? null, out.offset ?? null, batch)
    })
    this.markBatchStmt = db.prepare('INSERT OR IGNORE INTO written_batches (batch) VALUES (?)')
    // a batch's row is needed only while some id of it is kept
    this.pruneBatchesStmt = db.prepare('DELETE FROM written_batches WHERE batch < (SELECT COALESCE(MIN(batch), 9e18) FROM accepted_ids WHERE batch IS NOT NULL)')
    this.nextBatch = Number(db.prepare('SELECT MAX(b) FROM (SELECT MAX(batch) AS b FROM accepted_ids UNION ALL SELECT MAX(batch) FROM written_batches)').pluck().get() ?? 0) + 1
    // an upsert, so a batch marked without begin() (callers outside the receive loop) is recorded too
    const markStmt = db.prepare(
      'INSERT INTO accepted_ids (message_key, sender, accepted_at, ts, delivery, state) VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (message_key) DO UPDATE SET state = 1, ts = MAX(ts, excluded.ts)',
    )
    this.grantGetStmt = db.prepare('SELECT grant_bytes AS grantBytes, signature FROM grants WHERE hash = ?')
    this.grantPutStmt = db.prepare('INSERT OR IGNORE INTO grants (hash, grant_bytes, signature, exp) VALUES (?, ?, ?, ?)')
    this.grantPruneStmt = db.prepare('DELETE FROM grants WHERE exp < ?')
    this.markMany = db.transaction((entries: IntentEntry[], now: number) => {
      for (const e of entries) markStmt.run(key(e.messageId, e.sender), e.sender ?? null, now, e.timestamp ?? now, e.delivery)
    })
  }

  static async open(home: MqHome, identity: string, opts: ReplayGuardOptions = {}): Promise<ReplayGuard> {
    ensurePrivateDir(home.data)
    const db = new Database(join(home.data, replayFileName(identity)))
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = NORMAL')
    db.pragma('busy_timeout = 5000')
    db.exec('CREATE TABLE IF NOT EXISTS accepted_ids (message_key TEXT PRIMARY KEY, sender TEXT, accepted_at INTEGER NOT NULL, ts INTEGER) WITHOUT ROWID')
    // files from before the window: ts = accepted_at (never earlier than the message's own timestamp, up to clock skew)
    const cols = db.prepare('PRAGMA table_info(accepted_ids)').all() as {name: string}[]
    if (!cols.some((c) => c.name === 'ts')) {
      db.exec('ALTER TABLE accepted_ids ADD COLUMN ts INTEGER')
    }
    db.exec('UPDATE accepted_ids SET ts = accepted_at WHERE ts IS NULL')
    // files from before intents: every recorded id was written (state 1), by an unknown delivery
    if (!cols.some((c) => c.name === 'state')) {
      db.exec('ALTER TABLE accepted_ids ADD COLUMN delivery TEXT')
      db.exec('ALTER TABLE accepted_ids ADD COLUMN state INTEGER NOT NULL DEFAULT 1')
      db.exec('ALTER TABLE accepted_ids ADD COLUMN out_path TEXT')
      db.exec('ALTER TABLE accepted_ids ADD COLUMN out_offset INTEGER')
    }
    if (!cols.some((c) => c.name === 'batch')) db.exec('ALTER TABLE accepted_ids ADD COLUMN batch INTEGER')
    db.exec('CREATE TABLE IF NOT EXISTS written_batches (batch INTEGER PRIMARY KEY)')
    db.exec('CREATE INDEX IF NOT EXISTS accepted_ids_ts ON accepted_ids (ts)')
    // verified grants of MQE2/MQE3 envelopes (signed, wrapped: no secret), for envelopes that carry only a grant's hash
    db.exec('CREATE TABLE IF NOT EXISTS grants (hash BLOB PRIMARY KEY, grant_bytes BLOB NOT NULL, signature BLOB NOT NULL, exp INTEGER NOT NULL) WITHOUT ROWID')
    const g = new ReplayGuard(db, identity, opts)
    await g.prune()
    return g
  }

  /** True when a message with this authenticated timestamp is older than the window: refuse it. */
  tooOld(timestamp: number): boolean {
    return timestamp < this.now() - this.windowMs
  }

  /** True when this identity already accepted a message with this id from this sender (null: unsigned formats). */
  async seen(messageId: string, sender?: string | null): Promise<boolean> {
    return this.seenStmt.get(key(messageId, sender)) !== undefined
  }

  /** What this identity recorded for an id from a sender, if anything. */
  async lookup(messageId: string, sender?: string | null): Promise<PriorAcceptance | undefined> {
    const row = this.lookupStmt.get(key(messageId, sender)) as {delivery: string | null; state: number; outPath: string | null; outOffset: number | null} | undefined
    return row ? {...row, state: row.state === 0 ? 0 : 1} : undefined
  }

  /** Before writing: records the batch's ids as being written (state 0), with their deliveries and where the output stood. */
  async begin(entries: IntentEntry[], out: {path?: string; offset?: number} = {}): Promise<void> {
    if (entries.length === 0) return
    const id = this.nextBatch++
    this.beginMany(entries, out, this.now(), id)
    this.openBatch = {entries, id}
  }

  /** After the output was flushed: the batch's ids are written (state 1); prunes now and then. */
  async markWritten(entries: IntentEntry[]): Promise<void> {
    if (entries.length === 0) return
    const open = this.openBatch
    this.openBatch = undefined
    if (open && sameEntries(open.entries, entries)) this.markBatchStmt.run(open.id)
    else this.markMany(entries, this.now())
    if (this.now() - this.lastPrune >= PRUNE_EVERY_MS) await this.prune()
  }

  /** Records an accepted id; false when it was already there. */
  async record(messageId: string, sender?: string | null, timestamp?: number): Promise<boolean> {
    const had = await this.seen(messageId, sender)
    const now = this.now()
    this.insertStmt.run(key(messageId, sender), sender ?? null, now, timestamp ?? now)
    return !had
  }

  /** Records a batch in one transaction (one commit for many acks); prunes now and then. */
  async recordMany(entries: ReplayEntry[]): Promise<void> {
    if (entries.length === 0) return
    const now = this.now()
    this.insertMany(entries, now)
    if (now - this.lastPrune >= PRUNE_EVERY_MS) await this.prune()
  }

  /**
   * Deletes ids whose timestamp is older than the window; returns how many. Sound because a
   * signed message that old is refused by tooOld() before its id is looked up.
   */
  async prune(): Promise<number> {
    const now = this.now()
    this.lastPrune = now
    const n = this.pruneStmt.run(now - this.windowMs).changes
    this.pruneBatchesStmt.run()
    // every message under a grant is stamped before its expiry (+ skew): once that is older than the window, none can be accepted
    this.grantPruneStmt.run(now - this.windowMs - GRANT_SKEW_MS)
    return n
  }

  /** A grant this identity verified before (GrantStore, see envelope.ts). */
  getGrant(hash: Buffer): {grantBytes: Buffer; signature: Buffer} | undefined {
    return this.grantGetStmt.get(hash) as {grantBytes: Buffer; signature: Buffer} | undefined
  }

  putGrant(hash: Buffer, grantBytes: Buffer, signature: Buffer, exp: number): void {
    this.grantPutStmt.run(hash, grantBytes, signature, exp)
  }

  async count(): Promise<number> {
    return Number(this.db.prepare('SELECT COUNT(*) FROM accepted_ids').pluck().get())
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close()
  }
}

function sameEntries(a: IntentEntry[], b: IntentEntry[]): boolean {
  if (a === b) return true
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i].messageId !== b[i].messageId || a[i].sender !== b[i].sender) return false
  return true
}

/** Ids are chosen by senders, so scope them by sender: one sender cannot burn another's ids. */
function key(messageId: string, sender?: string | null): string {
  return `${sender ?? ''}\u0000${messageId}`
}
