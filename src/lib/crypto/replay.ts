/**
 * Remembers which message ids an identity has accepted, across runs, so a stored envelope that
 * is published again is refused. One small SQLite file per identity under $MQ_HOME/data (a
 * client-side file: it holds ids only, never payloads).
 *
 * The order used by `mq recv` is: seen()? -> write output -> record() -> ack. A crash after the
 * write and before record() may deliver a message twice to the output (at-least-once); recording
 * first could lose one, which is worse.
 */
import {createHash} from 'node:crypto'

import type {MqHome} from '../config/home.js'
import {type SqlStore, migrate, openStore} from '../store/sql.js'

export function replayFileName(identity: string): string {
  const safe = /^[A-Za-z0-9._-]{1,64}$/.test(identity) ? identity : createHash('sha256').update(identity).digest('hex').slice(0, 32)
  return `replay-${safe}.db`
}

export class ReplayGuard {
  private constructor(
    private readonly store: SqlStore,
    readonly identity: string,
  ) {}

  static async open(home: MqHome, identity: string): Promise<ReplayGuard> {
    const store = await openStore({dataDir: home.data, file: replayFileName(identity), url: 'sqlite'})
    await migrate(store, 'replay_migrations', [
      {
        id: 1,
        mysql: [],
        name: 'accepted message ids',
        sqlite: ['CREATE TABLE IF NOT EXISTS accepted (identity TEXT NOT NULL, message_id TEXT NOT NULL, sender TEXT, accepted_at INTEGER NOT NULL, PRIMARY KEY (identity, message_id))'],
      },
    ])
    return new ReplayGuard(store, identity)
  }

  /** True when this identity already accepted a message with this id (from this sender, when known). */
  async seen(messageId: string, sender?: string | null): Promise<boolean> {
    const row = await this.store.get('SELECT 1 AS one FROM accepted WHERE identity = ? AND message_id = ?', [this.identity, key(messageId, sender)])
    return row !== undefined
  }

  /** Records an accepted id; false when it was already there. */
  async record(messageId: string, sender?: string | null): Promise<boolean> {
    const r = await this.store.run('INSERT OR IGNORE INTO accepted (identity, message_id, sender, accepted_at) VALUES (?, ?, ?, ?)', [this.identity, key(messageId, sender), sender ?? null, Date.now()])
    return r.changes === 1
  }

  /** Records a batch in one transaction (one commit for many acks). */
  async recordMany(entries: {messageId: string; sender?: string | null}[]): Promise<void> {
    if (entries.length === 0) return
    const now = Date.now()
    await this.store.transaction(async (tx) => {
      for (const e of entries) {
        await tx.run('INSERT OR IGNORE INTO accepted (identity, message_id, sender, accepted_at) VALUES (?, ?, ?, ?)', [this.identity, key(e.messageId, e.sender), e.sender ?? null, now])
      }
    })
  }

  async count(): Promise<number> {
    const row = await this.store.get<{n: number}>('SELECT COUNT(*) AS n FROM accepted WHERE identity = ?', [this.identity])
    return Number(row?.n ?? 0)
  }

  async close(): Promise<void> {
    await this.store.close()
  }
}

/** Ids are chosen by senders, so scope them by sender: one sender cannot burn another's ids. */
function key(messageId: string, sender?: string | null): string {
  return sender ? `${sender}\u0000${messageId}` : `\u0000${messageId}`
}
