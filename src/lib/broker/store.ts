/**
 * Durable state of the broker in SQLite (WAL, synchronous=FULL) under $MQ_HOME/data/broker.db:
 * exchange/queue/binding definitions, messages of durable queues and the key directory.
 * Writes are queued and committed in groups by a writer thread (store-worker.ts): while one group
 * commits (one transaction, one fsync) the next one gathers, so under load each fsync covers many
 * publishes and acks, and disk latency never blocks the event loop. Publishers are confirmed only
 * after their group has committed. better-sqlite3 is used directly: this is the hot path.
 */
import Database from 'better-sqlite3'
import {join} from 'node:path'
import {Worker} from 'node:worker_threads'

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
  | {t: 'wire'; op: WireOp}

/** What crosses to the writer thread (store-worker.ts): compact tuples, cheap to clone. */
export type WireOp =
  | ['i', number, string, string, string, string, string | null, Uint8Array, number, number, number]
  | ['d', number]
  | ['c', number, number]
  | ['x', string, string]
  | ['q', string, string | null, number | null, number | null]
  | ['b', string, string, string]
  | ['D', string]
  | ['k', string, string, string]

export type CommitCallback = (err?: Error) => void

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
  /** read connection (startup recovery, key look-ups); all writes go through the writer thread */
  readonly db: Database.Database
  readonly file: string
  private ops: Op[] = []
  private waiters: CommitCallback[] = []
  private timer?: NodeJS.Timeout | NodeJS.Immediate
  private inflight: {id: number; waiters: CommitCallback[]} | null = null
  private batchSeq = 1
  private closed = false
  private readonly worker: Worker
  private failure?: Error
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
      this.db.pragma('journal_mode = WAL')
      this.db.exec(SCHEMA)
    } catch (error) {
      throw new UnavailableError('E_STORE_OPEN', `cannot open the broker store ${this.file}: ${(error as Error).message}`, {hint: 'Try this: check the permissions of $MQ_HOME/data', cause: error})
    }
    this.worker = new Worker(new URL('./store-worker.js', import.meta.url), {workerData: {file: this.file, synchronous: opts.synchronous ?? 'FULL'}})
    this.worker.unref()
    this.worker.on('message', (m: {id?: number; error?: string; closed?: boolean}) => {
      if (m.id === undefined || !this.inflight || this.inflight.id !== m.id) return
      const done = this.inflight.waiters
      this.inflight = null
      this.commits++
      const err = m.error ? new UnavailableError('E_STORE_WRITE', `the broker store could not commit: ${m.error}`, {hint: 'Try this: check free disk space and permissions of $MQ_HOME/data'}) : undefined
      for (const w of done) w(err)
      // whatever arrived during that commit forms the next group right away
      if (this.ops.length > 0 || this.waiters.length > 0) this.post()
    })
    this.worker.on('error', (err) => {
      this.failure = err
      const done = this.inflight?.waiters ?? []
      this.inflight = null
      const e = new UnavailableError('E_STORE_WRITE', `the broker store's writer failed: ${err.message}`, {hint: 'Try this: restart the broker; check $MQ_HOME/data'})
      for (const w of [...done, ...this.waiters]) w(e)
      this.waiters = []
    })
  }

  private post = (): void => {
    this.timer = undefined
    if (this.inflight || (this.ops.length === 0 && this.waiters.length === 0)) return
    const ops = this.ops
    const waiters = this.waiters
    this.ops = []
    this.waiters = []
    if (this.failure) {
      for (const w of waiters) w(new UnavailableError('E_STORE_WRITE', `the broker store's writer failed: ${this.failure.message}`, {hint: 'Try this: restart the broker'}))
      return
    }
    // a message inserted and deleted within one group (published, delivered and acked between two
    // commits) never touches the disk at all
    const inserted = new Set<number>()
    const deleted = new Set<number>()
    for (const op of ops) {
      if (op.t === 'ins') inserted.add(op.m.seq)
      else if (op.t === 'del') deleted.add(op.seq)
    }
    const wire: WireOp[] = []
    for (const op of ops) {
      if (op.t === 'ins') {
        const m = op.m
        if (deleted.has(m.seq)) continue
        let h: string | null = null
        for (const _k in m.headers) {
          h = JSON.stringify(m.headers)
          break
        }
        wire.push(['i', m.seq, op.queue, m.messageId, m.exchange, m.routingKey, h, m.body, m.timestamp, m.deliveryCount, m.expiresAt])
      } else if (op.t === 'del') {
        if (!inserted.has(op.seq)) wire.push(['d', op.seq])
      } else if (op.t === 'cnt') {
        if (!deleted.has(op.seq) && !inserted.has(op.seq)) wire.push(['c', op.seq, op.n])
      } else wire.push(op.op)
    }
    const id = this.batchSeq++
    this.inflight = {id, waiters}
    this.worker.postMessage({id, ops: wire})
  }

  private enqueue(op: Op): void {
    if (this.closed) return
    this.ops.push(op)
    this.arm()
  }

  private arm(): void {
    if (this.timer || this.inflight) return
    this.timer = this.commitIntervalMs > 0 ? setTimeout(this.post, this.commitIntervalMs) : setImmediate(this.post)
  }

  /** Calls cb once everything queued so far is durably committed (with an error if it could not be). */
  afterCommit(cb: CommitCallback): void {
    if (this.closed) {
      cb(new UnavailableError('E_STORE_CLOSED', 'the broker store is closed', {hint: 'Try this: the broker is shutting down; retry against the restarted broker'}))
      return
    }
    this.waiters.push(cb)
    this.arm()
  }

  /** Resolves once everything queued so far is committed. */
  flush(): Promise<void> {
    return new Promise((resolve, reject) => this.afterCommit((err) => (err ? reject(err) : resolve())))
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
    this.enqueue({op: ['x', name, type], t: 'wire'})
  }

  saveQueue(q: StoredQueue): void {
    this.enqueue({op: ['q', q.name, q.deadLetter, q.ttlMs, q.maxLength], t: 'wire'})
  }

  saveBinding(exchange: string, queue: string, key: string): void {
    this.enqueue({op: ['b', exchange, queue, key], t: 'wire'})
  }

  deleteQueue(name: string): void {
    this.enqueue({op: ['D', name], t: 'wire'})
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

  // key directory: public certificates only
  putKey(name: string, encCertPem: string, signCertPem: string): Promise<void> {
    this.enqueue({op: ['k', name, encCertPem, signCertPem], t: 'wire'})
    return this.flush()
  }

  getKey(name: string): {encCertPem: string; signCertPem: string} | null {
    const r = this.db.prepare('SELECT enc_cert, sign_cert FROM keys WHERE name = ?').get(name) as {enc_cert: string; sign_cert: string} | undefined
    return r ? {encCertPem: r.enc_cert, signCertPem: r.sign_cert} : null
  }

  /** Commits what is queued, stops the writer thread and closes the database. */
  async close(): Promise<void> {
    if (this.closed) return
    if (!this.failure) await this.flush().catch(() => {})
    this.closed = true
    if (this.timer) clearTimeout(this.timer as NodeJS.Timeout)
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 2000)
      this.worker.once('message', () => {
        clearTimeout(t)
        resolve()
      })
      this.worker.postMessage({close: true})
    })
    await this.worker.terminate()
    this.db.close()
  }
}
