/**
 * Durable state of the broker in SQLite (WAL, synchronous=FULL) under $MQ_HOME/data/broker.db:
 * exchange/queue/binding definitions, messages of durable queues and the key directory.
 * Writes are queued and committed in groups: one transaction (one fsync) every few ms covers
 * every publish and ack of that window, and publishers are confirmed only after their group commits.
 * better-sqlite3 is used directly (synchronous, no promise per row) because this is the hot path.
 */
import Database from 'better-sqlite3'
import {join} from 'node:path'

import {UnavailableError} from '../errors.js'
import {ensurePrivateDir} from '../util/fs.js'
import type {ExchangeType, Message} from './engine.js'

export interface StoredMessage {
  queue: string
  seq: number
  messageId: string
  exchange: string
  routingKey: string
  headers: Record<string, string>
  body: Buffer
  timestamp: number
  deliveryCount: number
  expiresAt: number
}

export interface StoredQueue {
  name: string
  deadLetter: string | null
  ttlMs: number | null
  maxLength: number | null
}

type Op =
  | {t: 'ins'; queue: string; m: Message}
  | {t: 'del'; seq: number}
  | {t: 'cnt'; seq: number; n: number}
  | {t: 'sql'; fn: () => void}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS exchanges (name TEXT PRIMARY KEY, type TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, dead_letter TEXT, ttl_ms INTEGER, max_length INTEGER);
CREATE TABLE IF NOT EXISTS bindings (exchange TEXT NOT NULL, queue TEXT NOT NULL, routing_key TEXT NOT NULL, PRIMARY KEY (exchange, queue, routing_key));
CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, queue TEXT NOT NULL, message_id TEXT NOT NULL, exchange TEXT NOT NULL,
  routing_key TEXT NOT NULL, headers TEXT, body BLOB NOT NULL, ts INTEGER NOT NULL, delivery_count INTEGER NOT NULL DEFAULT 0, expires_at INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS messages_queue ON messages (queue, seq);
CREATE TABLE IF NOT EXISTS keys (name TEXT PRIMARY KEY, enc_cert TEXT NOT NULL, sign_cert TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
`

export class DurableStore {
  readonly db: Database.Database
  readonly file: string
  private ops: Op[] = []
  private waiters: (() => void)[] = []
  private timer?: NodeJS.Timeout
  private closed = false
  private readonly stmts
  commits = 0

  constructor(
    dataDir: string,
    private readonly commitIntervalMs = 2,
    opts: {synchronous?: 'FULL' | 'NORMAL'} = {},
  ) {
    ensurePrivateDir(dataDir)
    this.file = join(dataDir, 'broker.db')
    try {
      this.db = new Database(this.file)
    } catch (error) {
      throw new UnavailableError('E_STORE_OPEN', `cannot open the broker store ${this.file}: ${(error as Error).message}`, {hint: 'Try this: check the permissions of $MQ_HOME/data', cause: error})
    }
    this.db.pragma('journal_mode = WAL')
    this.db.pragma(`synchronous = ${opts.synchronous ?? 'FULL'}`)
    this.db.exec(SCHEMA)
    const db = this.db
    this.stmts = {
      cnt: db.prepare('UPDATE messages SET delivery_count = ? WHERE seq = ?'),
      del: db.prepare('DELETE FROM messages WHERE seq = ?'),
      ins: db.prepare('INSERT OR REPLACE INTO messages (seq, queue, message_id, exchange, routing_key, headers, body, ts, delivery_count, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)'),
    }
  }

  private commitNow = (): void => {
    this.timer = undefined
    if (this.ops.length === 0 && this.waiters.length === 0) return
    const ops = this.ops
    const waiters = this.waiters
    this.ops = []
    this.waiters = []
    const {cnt, del, ins} = this.stmts
    // a message inserted and deleted within one group (published, delivered and acked between two
    // commits) never needs to touch the disk at all
    const inserted = new Set<number>()
    const deleted = new Set<number>()
    for (const op of ops) {
      if (op.t === 'ins') inserted.add(op.m.seq)
      else if (op.t === 'del') deleted.add(op.seq)
    }
    this.db.transaction(() => {
      for (const op of ops) {
        if (op.t === 'ins') {
          if (deleted.has(op.m.seq)) continue
          const m = op.m
          const h = Object.keys(m.headers).length ? JSON.stringify(m.headers) : null
          ins.run(m.seq, op.queue, m.messageId, m.exchange, m.routingKey, h, m.body, m.timestamp, m.deliveryCount, m.expiresAt)
        } else if (op.t === 'del') {
          if (!inserted.has(op.seq)) del.run(op.seq)
        } else if (op.t === 'cnt') {
          if (!deleted.has(op.seq) && !inserted.has(op.seq)) cnt.run(op.n, op.seq)
        }
        else op.fn()
      }
    })()
    this.commits++
    for (const w of waiters) w()
  }

  private enqueue(op: Op): void {
    if (this.closed) return
    this.ops.push(op)
    this.arm()
  }

  private arm(): void {
    if (!this.timer) this.timer = setTimeout(this.commitNow, this.commitIntervalMs)
  }

  /** Calls cb once everything queued so far is durably committed. */
  afterCommit(cb: () => void): void {
    this.waiters.push(cb)
    this.arm()
  }

  /** Commits everything queued now (shutdown, tests). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer)
    this.commitNow()
  }

  insertMessage(queue: string, m: Message): void {
    this.enqueue({m, queue, t: 'ins'})
  }

  deleteMessage(seq: number): void {
    this.enqueue({seq, t: 'del'})
  }

  updateDeliveryCount(seq: number, n: number): void {
    this.enqueue({n, seq, t: 'cnt'})
  }

  saveExchange(name: string, type: ExchangeType): void {
    this.enqueue({fn: () => this.db.prepare('INSERT OR REPLACE INTO exchanges (name, type) VALUES (?, ?)').run(name, type), t: 'sql'})
  }

  saveQueue(q: StoredQueue): void {
    this.enqueue({fn: () => this.db.prepare('INSERT OR REPLACE INTO queues (name, dead_letter, ttl_ms, max_length) VALUES (?,?,?,?)').run(q.name, q.deadLetter, q.ttlMs, q.maxLength), t: 'sql'})
  }

  saveBinding(exchange: string, queue: string, key: string): void {
    this.enqueue({fn: () => this.db.prepare('INSERT OR IGNORE INTO bindings (exchange, queue, routing_key) VALUES (?,?,?)').run(exchange, queue, key), t: 'sql'})
  }

  deleteQueue(name: string): void {
    this.enqueue({
      fn: () => {
        this.db.prepare('DELETE FROM queues WHERE name = ?').run(name)
        this.db.prepare('DELETE FROM bindings WHERE queue = ?').run(name)
        this.db.prepare('DELETE FROM messages WHERE queue = ?').run(name)
      },
      t: 'sql',
    })
  }

  loadDefinitions(): {exchanges: {name: string; type: ExchangeType}[]; queues: StoredQueue[]; bindings: {exchange: string; queue: string; key: string}[]} {
    const exchanges = this.db.prepare('SELECT name, type FROM exchanges').all() as {name: string; type: ExchangeType}[]
    const queues = (this.db.prepare('SELECT name, dead_letter, ttl_ms, max_length FROM queues').all() as {name: string; dead_letter: string | null; ttl_ms: number | null; max_length: number | null}[]).map((r) => ({
      deadLetter: r.dead_letter,
      maxLength: r.max_length,
      name: r.name,
      ttlMs: r.ttl_ms,
    }))
    const bindings = this.db.prepare('SELECT exchange, queue, routing_key AS key FROM bindings').all() as {exchange: string; queue: string; key: string}[]
    return {bindings, exchanges, queues}
  }

  *loadMessages(): Generator<StoredMessage> {
    const rows = this.db.prepare('SELECT seq, queue, message_id, exchange, routing_key, headers, body, ts, delivery_count, expires_at FROM messages ORDER BY seq').iterate() as Iterable<{
      seq: number
      queue: string
      message_id: string
      exchange: string
      routing_key: string
      headers: string | null
      body: Buffer
      ts: number
      delivery_count: number
      expires_at: number
    }>
    for (const r of rows) {
      yield {
        body: r.body,
        deliveryCount: r.delivery_count,
        exchange: r.exchange,
        expiresAt: r.expires_at,
        headers: r.headers ? JSON.parse(r.headers) : {},
        messageId: r.message_id,
        queue: r.queue,
        routingKey: r.routing_key,
        seq: r.seq,
        timestamp: r.ts,
      }
    }
  }

  maxSeq(): number {
    const r = this.db.prepare('SELECT MAX(seq) AS m FROM messages').get() as {m: number | null}
    return r.m ?? 0
  }

  // key directory: public certificates only, written straight through (rare)
  putKey(name: string, encCertPem: string, signCertPem: string): void {
    this.db.prepare('INSERT OR REPLACE INTO keys (name, enc_cert, sign_cert, updated_at) VALUES (?,?,?,?)').run(name, encCertPem, signCertPem, Date.now())
  }

  getKey(name: string): {encCertPem: string; signCertPem: string} | null {
    const r = this.db.prepare('SELECT enc_cert, sign_cert FROM keys WHERE name = ?').get(name) as {enc_cert: string; sign_cert: string} | undefined
    return r ? {encCertPem: r.enc_cert, signCertPem: r.sign_cert} : null
  }

  close(): void {
    if (this.closed) return
    this.flush()
    this.closed = true
    this.db.close()
  }
}
