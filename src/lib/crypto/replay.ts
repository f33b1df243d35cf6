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
 * The order used by `mq recv` is: seen()? -> write output -> record -> ack. A crash after the
 * write and before the record may deliver a message twice to the output (at-least-once); recording
 * first could lose one, which is worse.
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

export const DEFAULT_REPLAY_WINDOW_MS = 30 * 86_400_000

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
    db.exec('CREATE INDEX IF NOT EXISTS accepted_ids_ts ON accepted_ids (ts)')
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
    return this.pruneStmt.run(now - this.windowMs).changes
  }

  async count(): Promise<number> {
    return Number(this.db.prepare('SELECT COUNT(*) FROM accepted_ids').pluck().get())
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close()
  }
}

/** Ids are chosen by senders, so scope them by sender: one sender cannot burn another's ids. */
function key(messageId: string, sender?: string | null): string {
  return `${sender ?? ''}\u0000${messageId}`
}
