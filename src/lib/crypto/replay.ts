/**
 * Remembers which message ids an identity has accepted, across runs, so a stored envelope that
 * is published again is refused. One small SQLite file per identity under $MQ_HOME/data (a
 * client-side file: it holds ids and sender names only, never payloads). It is always the embedded
 * SQLite (not store.url): it belongs to the receiving machine, and is on the hot path of every
 * message, so statements are prepared once.
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
}

export class ReplayGuard {
  private readonly seenStmt: Database.Statement
  private readonly insertStmt: Database.Statement
  private readonly insertMany: (entries: ReplayEntry[], now: number) => void

  private constructor(
    private readonly db: Database.Database,
    readonly identity: string,
  ) {
    this.seenStmt = db.prepare('SELECT 1 FROM accepted_ids WHERE message_key = ?').pluck()
    this.insertStmt = db.prepare('INSERT OR IGNORE INTO accepted_ids (message_key, sender, accepted_at) VALUES (?, ?, ?)')
    this.insertMany = db.transaction((entries: ReplayEntry[], now: number) => {
      for (const e of entries) this.insertStmt.run(key(e.messageId, e.sender), e.sender ?? null, now)
    })
  }

  static async open(home: MqHome, identity: string): Promise<ReplayGuard> {
    ensurePrivateDir(home.data)
    const db = new Database(join(home.data, replayFileName(identity)))
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = NORMAL')
    db.pragma('busy_timeout = 5000')
    db.exec('CREATE TABLE IF NOT EXISTS accepted_ids (message_key TEXT PRIMARY KEY, sender TEXT, accepted_at INTEGER NOT NULL) WITHOUT ROWID')
    return new ReplayGuard(db, identity)
  }

  /** True when this identity already accepted a message with this id from this sender (null: unsigned formats). */
  async seen(messageId: string, sender?: string | null): Promise<boolean> {
    return this.seenStmt.get(key(messageId, sender)) !== undefined
  }

  /** Records an accepted id; false when it was already there. */
  async record(messageId: string, sender?: string | null): Promise<boolean> {
    return this.insertStmt.run(key(messageId, sender), sender ?? null, Date.now()).changes === 1
  }

  /** Records a batch in one transaction (one commit for many acks). */
  async recordMany(entries: ReplayEntry[]): Promise<void> {
    if (entries.length > 0) this.insertMany(entries, Date.now())
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
