import {hostname} from 'node:os'

import type {Redis} from 'ioredis'
import {Counter, Gauge, Registry} from 'prom-client'

import type {MqConfig} from '../config/schema.js'
import {MqError, errorText} from '../errors.js'
import type {ApiClient} from '../http/client.js'
import {type Logger, silentLogger} from '../log.js'
import {type PipelineKeys, pipelineKeys} from './keys.js'
import {Reconciler} from './reconciler.js'

// Moves due retries back into the stream atomically, so two workers never both requeue one entry.
const MOVE_DUE = `
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local e = cjson.decode(m)
  redis.call('XADD', KEYS[2], '*', 'id', e.id, 'client', e.client, 'attempts', tostring(e.attempts))
  redis.call('ZREM', KEYS[1], m)
end
return #due
`

export interface StreamEntry {
  entryId: string
  id: string
  client: string
  /** delivery attempts already made */
  attempts: number
}

export interface WorkerOptions {
  config: MqConfig
  /** commands (XACK, XADD, ZADD, scripts) */
  redis: Redis
  /** a second connection for blocking XREADGROUP */
  blocking: Redis
  /** the broker's internal API as the worker identity */
  broker: ApiClient
  logger?: Logger
  consumer?: string
  /** overrides of config.worker */
  concurrency?: number
}

function fieldsOf(entryId: string, flat: string[]): StreamEntry {
  const f: Record<string, string> = {}
  for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i]] = flat[i + 1]
  return {attempts: Number(f.attempts ?? 0) || 0, client: f.client ?? '', entryId, id: f.id ?? ''}
}

/**
 * Entries per broker call for a window of `concurrency`: at least 32 (each call costs the broker
 * an HTTPS request, a payload query, a records transaction and a commit of its own store, so
 * smaller calls cost more per message), at most 100, and half the window once that is 64 or more,
 * so a call is read and sent while the other is at the broker (waiting for its store's fsync)
 * instead of the whole window waiting for one call.
 */
export function callSize(concurrency: number): number {
  return Math.min(100, Math.max(32, Math.ceil(concurrency / 2)))
}

/** Delay before the next attempt: fixed, or exponential with "equal jitter", capped. */
export function retryDelay(cfg: MqConfig['worker'], attempts: number, rnd = Math.random): number {
  if (cfg.backoff === 'fixed') return cfg.retry_delay_ms
  const exp = Math.min(cfg.max_retry_delay_ms, cfg.retry_delay_ms * 2 ** Math.min(30, Math.max(0, attempts - 1)))
  return Math.round(exp / 2 + (rnd() * exp) / 2)
}

/**
 * `mq worker start`: consumes the ingest stream in a consumer group and delivers each message
 * through the broker's internal API. A failed attempt is parked in a delayed ZSET (holding no
 * concurrency slot) until due; after max_attempts it is marked failed and dead-lettered. Entries
 * left pending by a crashed worker are reclaimed with XAUTOCLAIM.
 */
export class Worker {
  readonly consumer: string
  readonly registry = new Registry()
  private readonly keys: PipelineKeys
  private readonly log: Logger
  private readonly cfg: MqConfig['worker']
  private readonly concurrency: number
  private running = false
  private inHand = new Map<string, Promise<void>>()
  /** batches the broker answered whose entries are still being acknowledged (or parked) in Redis */
  private readonly settling = new Set<Promise<void>>()
  private slotFreed?: () => void
  private timers: NodeJS.Timeout[] = []
  private loopDone?: Promise<void>
  private readonly m
  /** re-enqueues records Redis lost; runs in the one worker holding its lease */
  readonly reconciler: Reconciler

  constructor(private readonly o: WorkerOptions) {
    this.cfg = o.config.worker
    this.keys = pipelineKeys(o.config)
    this.log = (o.logger ?? silentLogger).child('worker')
    this.consumer = o.consumer ?? `${hostname()}-${process.pid}`
    this.concurrency = o.concurrency ?? this.cfg.concurrency
    if (!o.redis.moveDue) o.redis.defineCommand('moveDue', {lua: MOVE_DUE, numberOfKeys: 2})
    const r = [this.registry]
    this.m = {
      attempts: new Counter({help: 'Delivery attempts by outcome', labelNames: ['outcome'], name: 'mq_worker_attempts_total', registers: r}),
      dead: new Counter({help: 'Messages dead-lettered after max attempts', name: 'mq_worker_dead_lettered_total', registers: r}),
      delivered: new Counter({help: 'Messages delivered', name: 'mq_worker_delivered_total', registers: r}),
      inHand: new Gauge({collect: () => undefined, help: 'Messages being delivered now', name: 'mq_worker_in_hand', registers: r}),
      reclaimed: new Counter({help: 'Entries reclaimed from idle consumers', name: 'mq_worker_reclaimed_total', registers: r}),
      retries: new Counter({help: 'Retries scheduled', name: 'mq_worker_retries_scheduled_total', registers: r}),
    }
    this.reconciler = new Reconciler({broker: o.broker, config: o.config, consumer: this.consumer, logger: o.logger ?? silentLogger, redis: o.redis, registry: this.registry})
    // depths of the shared pipeline keys, read at scrape time
    const redis = o.redis
    const keys = this.keys
    new Gauge({
      async collect(this: Gauge) {
        const [stream, retry, dead] = await Promise.all([redis.xlen(keys.stream), redis.zcard(keys.retry), redis.xlen(keys.dead)]).catch(() => [NaN, NaN, NaN])
        this.set({key: 'stream'}, stream)
        this.set({key: 'retry'}, retry)
        this.set({key: 'dead'}, dead)
      },
      help: 'Entries in the ingest stream, the delayed-retry set and the dead-letter stream',
      labelNames: ['key'],
      name: 'mq_pipeline_depth',
      registers: r,
    })
  }

  get busy(): number {
    return this.inHand.size
  }

  /** The consumer group (and the stream), created if missing: at start, and after Redis lost them (a restart without persistence). */
  private async ensureGroup(): Promise<void> {
    try {
      await this.o.redis.xgroup('CREATE', this.keys.stream, this.cfg.group, '0', 'MKSTREAM')
    } catch (error) {
      if (!/BUSYGROUP/.test(errorText(error))) throw error
    }
  }

  /** Starts the one read loop and its timers; a second call while running does nothing. */
  async start(): Promise<void> {
    if (this.running) return
    await this.ensureGroup()
    if (this.running) return
    this.running = true
    const pump = Math.max(20, Math.min(1000, Math.floor(this.cfg.retry_delay_ms / 4) || 20))
    this.timers.push(setInterval(() => void this.moveDue(), pump))
    const claimEvery = Math.max(100, Math.min(30_000, Math.floor(this.cfg.claim_idle_ms / 2)))
    this.timers.push(setInterval(() => void this.reclaim(), claimEvery))
    this.loopDone = this.loop()
    this.reconciler.start()
  }

  /**
   * Stops reading, finishes what is in hand, then returns; after `deadlineMs` it returns anyway
   * (entries still in hand stay pending in the stream and another worker reclaims them; delivery
   * is idempotent). Resolves true when everything in hand was settled.
   */
  async stop(deadlineMs = this.cfg.stop_timeout_ms): Promise<boolean> {
    this.running = false
    for (const t of this.timers) clearInterval(t)
    this.timers = []
    this.slotFreed?.()
    // XREADGROUP BLOCK on the blocking connection returns within its timeout
    let timer: NodeJS.Timeout | undefined
    const finished = (async () => {
      await this.loopDone
      await Promise.allSettled([...this.inHand.values(), ...this.settling])
      return true
    })()
    const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), deadlineMs)))
    const done = await Promise.race([finished, late])
    clearTimeout(timer)
    // hands the lease back, so another worker takes over without waiting for it to expire
    await this.reconciler.stop()
    if (!done) this.log.warn('stop deadline reached; entries still in hand stay pending and will be reclaimed', {in_hand: this.inHand.size, stop_timeout_ms: deadlineMs})
    return done
  }

  private async loop(): Promise<void> {
    // our own pending entries first (a restart with the same consumer name), then new ones
    let cursor = '0'
    while (this.running) {
      const free = this.concurrency - this.inHand.size
      if (free <= 0) {
        await new Promise<void>((r) => (this.slotFreed = r))
        continue
      }
      let res: [string, [string, string[]][]][] | null
      try {
        res = (await this.o.blocking.xreadgroup('GROUP', this.cfg.group, this.consumer, 'COUNT', free, 'BLOCK', 1000, 'STREAMS', this.keys.stream, cursor)) as unknown as typeof res
      } catch (error) {
        // Redis lost the group (restarted without persistence): recreate it; this loop goes on, no second one
        if (/NOGROUP/.test(errorText(error))) await this.ensureGroup().catch(() => {})
        this.log.warn('reading the stream failed; retrying', {error})
        await sleep(500)
        continue
      }
      const entries = res?.[0]?.[1] ?? []
      if (cursor !== '>' && entries.length === 0) cursor = '>'
      if (cursor !== '>' && entries.length > 0) cursor = entries[entries.length - 1][0]
      // entries deleted while pending come back without fields
      this.dispatch(entries.filter(([, flat]) => flat).map(([entryId, flat]) => fieldsOf(entryId, flat)))
    }
  }

  /**
   * Starts delivering entries in broker calls of callSize(); they count as in hand until the
   * broker has answered for them. Acknowledging them in Redis (or parking a failed one) is settled
   * after that, off the slots: a read and a call need not wait for the previous call's XACK round
   * trip. An entry stays pending in the stream until acknowledged, so a crash in between only
   * redelivers it (deliveries are idempotent).
   */
  private dispatch(entries: StreamEntry[]): void {
    const todo = entries.filter((e) => !this.inHand.has(e.entryId))
    const size = callSize(this.concurrency)
    for (let i = 0; i < todo.length; i += size) {
      const batch = todo.slice(i, i + size)
      let released = false
      const release = () => {
        if (released) return
        released = true
        for (const e of batch) this.inHand.delete(e.entryId)
        this.m.inHand.set(this.inHand.size)
        const f = this.slotFreed
        this.slotFreed = undefined
        f?.()
      }
      // in hand before the call starts: a batch without a valid entry is answered at once
      const started = Promise.resolve()
      for (const e of batch) this.inHand.set(e.entryId, started)
      const p = this.processBatch(batch, release).finally(release)
      this.settling.add(p)
      void p.finally(() => this.settling.delete(p))
      for (const e of batch) if (this.inHand.has(e.entryId)) this.inHand.set(e.entryId, p)
    }
    this.m.inHand.set(this.inHand.size)
  }

  /** One delivery attempt for one entry; never throws. */
  process(e: StreamEntry): Promise<void> {
    return this.processBatch([e])
  }

  /**
   * One delivery attempt for each entry, in one broker call; never throws. Resolves once every
   * entry is settled in Redis (acknowledged, parked for a retry or dead-lettered); `answered` is
   * called as soon as the broker has answered (or failed to).
   */
  async processBatch(entries: StreamEntry[], answered?: () => void): Promise<void> {
    const failures = new Map<string, string>()
    const valid = entries.filter((e) => {
      if (!e.id) failures.set(e.entryId, 'E_BAD_ENTRY: stream entry carries no message id')
      return Boolean(e.id)
    })
    if (valid.length > 0) {
      try {
        const r = await this.o.broker.call<{results: {status?: string | number; error?: {code: string; message: string}}[]}>('POST', '/internal/messages/deliver', {
          exchange: this.cfg.exchange,
          messages: valid.map((e) => ({attempts: e.attempts + 1, message_id: e.id})),
          routing_key: this.cfg.routing_key,
        })
        for (const [k, e] of valid.entries()) {
          const res = r.results?.[k]
          if (!res) failures.set(e.entryId, 'E_BROKER_PROTOCOL: no result for this message')
          else if (res.error) failures.set(e.entryId, `${res.error.code}: ${res.error.message}`)
        }
      } catch (error) {
        const text = error instanceof MqError ? `${error.code}: ${error.message}` : errorText(error)
        for (const e of valid) failures.set(e.entryId, text)
      }
    }
    answered?.()
    const delivered = entries.filter((e) => !failures.has(e.entryId))
    try {
      if (delivered.length > 0) {
        // one XACK and one XDEL for the whole batch (both take many ids): two commands per batch,
        // not two per entry, for Redis to run and for ioredis to build
        const ids = delivered.map((e) => e.entryId)
        await this.o.redis.multi().xack(this.keys.stream, this.cfg.group, ...ids).xdel(this.keys.stream, ...ids).exec()
        this.m.attempts.inc({outcome: 'delivered'}, delivered.length)
        this.m.delivered.inc(delivered.length)
      }
    } catch (error) {
      // Redis is down: the entries stay pending and are reclaimed later; delivery is idempotent.
      this.log.warn('could not acknowledge delivered entries; they will be reclaimed', {count: delivered.length, error})
    }
    await Promise.all(entries.filter((e) => failures.has(e.entryId)).map((e) => this.failed(e, failures.get(e.entryId)!)))
  }

  private failLoggedAt = 0
  private failSuppressed = 0

  /** Every failed attempt is logged with its reason, at most one line a second (with how many were not). */
  private noteFailure(e: StreamEntry, attempts: number, failure: string): void {
    const now = Date.now()
    if (now - this.failLoggedAt < 1000) {
      this.failSuppressed++
      return
    }
    this.log.warn('delivery attempt failed', {attempts, error: failure, message_id: e.id, more_failures: this.failSuppressed || undefined})
    this.failLoggedAt = now
    this.failSuppressed = 0
  }

  /** A failed attempt: park it for a retry, or dead-letter it after max_attempts. */
  private async failed(e: StreamEntry, failure: string): Promise<void> {
    const attempts = e.attempts + 1
    this.m.attempts.inc({outcome: 'failed'})
    if (attempts < this.cfg.max_attempts) this.noteFailure(e, attempts, failure)
    try {
      if (attempts >= this.cfg.max_attempts) {
        this.log.warn('giving up: dead-lettering', {attempts, error: failure, message_id: e.id})
        await this.status(e.id, {attempts, error: failure, status: 'failed'})
        await this.o.redis
          .multi()
          .xadd(this.keys.dead, '*', 'id', e.id, 'client', e.client, 'attempts', String(attempts), 'error', failure.slice(0, 500), 'failed_at', new Date().toISOString())
          .xack(this.keys.stream, this.cfg.group, e.entryId)
          .xdel(this.keys.stream, e.entryId)
          .exec()
        this.m.dead.inc()
        return
      }
      const delay = retryDelay(this.cfg, attempts)
      this.log.debug('attempt failed; retrying later', {attempts, delay_ms: delay, error: failure, message_id: e.id})
      void this.status(e.id, {attempts, error: failure, status: 'processing'})
      await this.o.redis
        .multi()
        .zadd(this.keys.retry, Date.now() + delay, JSON.stringify({attempts, client: e.client, id: e.id, n: e.entryId}))
        .xack(this.keys.stream, this.cfg.group, e.entryId)
        .xdel(this.keys.stream, e.entryId)
        .exec()
      this.m.retries.inc()
    } catch (error) {
      this.log.warn('could not settle a stream entry; it will be reclaimed', {error, message_id: e.id})
    }
  }

  /** Best-effort status note to the broker (bookkeeping; the stream entry is the truth). */
  private async status(id: string, body: {attempts: number; error: string; status: string}): Promise<void> {
    try {
      await this.o.broker.call('PUT', `/internal/messages/${encodeURIComponent(id)}/status`, body)
    } catch (error) {
      this.log.debug('status update failed', {error, message_id: id})
    }
  }

  private async moveDue(): Promise<void> {
    try {
      await this.o.redis.moveDue(this.keys.retry, this.keys.stream, Date.now(), 500)
    } catch (error) {
      this.log.debug('moving due retries failed', {error})
    }
  }

  /** Takes over entries another consumer has held longer than claim_idle_ms. */
  async reclaim(): Promise<number> {
    if (!this.running) return 0
    const free = this.concurrency - this.inHand.size
    if (free <= 0) return 0
    try {
      const r = (await this.o.redis.xautoclaim(this.keys.stream, this.cfg.group, this.consumer, this.cfg.claim_idle_ms, '0-0', 'COUNT', free)) as [string, [string, string[] | null][], string[]?]
      const claimed = (r[1] ?? []).filter(([, flat]) => flat).map(([entryId, flat]) => fieldsOf(entryId, flat!))
      const n = claimed.length
      this.dispatch(claimed)
      if (n) {
        this.m.reclaimed.inc(n)
        this.log.info('reclaimed entries from an idle consumer', {count: n})
      }
      return n
    } catch (error) {
      this.log.debug('reclaim failed', {error})
      return 0
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
