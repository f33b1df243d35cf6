import {randomBytes} from 'node:crypto'

import type {Redis, Result} from 'ioredis'
import {Counter, Gauge, type Registry} from 'prom-client'

import type {MqConfig} from '../config/schema.js'
import type {ApiClient} from '../http/client.js'
import {type Logger, silentLogger} from '../log.js'
import {parseDuration} from '../util/duration.js'
import {type PipelineKeys, pipelineKeys} from './keys.js'

// Renew or release the lease only while we still hold it: a lease that expired and was taken by
// another worker must not be extended or deleted by its former holder.
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`

/** Records asked from the broker per call, and Redis entries read per call while looking for ids. */
const PAGE = 1000
const SCAN = 5000
/**
 * A pass reads at most this many pages of records; the next pass goes on from there. A legitimate
 * backlog older than reconcile_after (slow consumers) thus costs a bounded number of calls per pass,
 * and a lost backlog of millions is put back in steps, not in one burst.
 */
const PAGES_PER_PASS = 10

export interface ReconcilerOptions {
  config: MqConfig
  /** the worker's command connection (not the blocking one) */
  redis: Redis
  broker: ApiClient
  /** the worker's consumer name, for the lease's value and the logs */
  consumer: string
  registry: Registry
  logger?: Logger
}

interface Undelivered {
  message_id: string
  client_id: string
  status: string
  attempts: number
  queued_at: string
}

/** worker.reconcile_after in ms, or undefined when it is "off". */
export function reconcileAfterMs(cfg: MqConfig['worker']): number | undefined {
  return cfg.reconcile_after === 'off' ? undefined : parseDuration(cfg.reconcile_after, 'worker.reconcile_after')
}

/**
 * The stream holds only references; the records store holds every accepted message. When Redis
 * loses references (a restart without AOF, or with RDB snapshots only), their records stay queued
 * (or processing, when the lost entry waited in the retry set) and nothing would ever deliver them.
 * The reconciler finds such records older than worker.reconcile_after that are in neither the
 * stream nor the retry set, and adds them to the stream again. The worker then delivers them
 * through the usual path, which is idempotent by message id: a record already delivered publishes
 * nothing, and concurrent or crashed deliveries are deduplicated by the broker. So a reference
 * added twice (the reconciler raced a worker that had just delivered and removed it) never
 * reaches the consumer twice.
 *
 * Records of requests answered 503 are `failed` (see NOT_ACCEPTED), never listed here: a refused
 * request is not delivered behind its client's back.
 *
 * One worker at a time does it, elected by a lease in Redis (SET NX PX, renewed every interval,
 * valid for three). Why Redis and not the records store: workers reach the store only through the
 * broker's API (only the broker opens it), while every worker already shares Redis, where SET NX PX
 * is an atomic take-if-free with an expiry, so a leader killed with -9 loses the lease by itself
 * within three intervals and another worker takes over. Without Redis there is nowhere to
 * re-enqueue to anyway. The lease saves work, it does not guard correctness: a paused leader that
 * lost its lease and still finishes a pass only adds references that are delivered once.
 */
export class Reconciler {
  private readonly keys: PipelineKeys
  private readonly log: Logger
  private readonly leaseKey: string
  private readonly token: string
  private readonly afterMs: number | undefined
  private readonly intervalMs: number
  private readonly leaseMs: number
  private timer?: NodeJS.Timeout
  private leader = false
  private passing?: Promise<unknown>
  /** where the previous pass stopped (null: start from the oldest record) */
  private cursor: string | null = null
  private stopped = true
  private readonly m

  constructor(private readonly o: ReconcilerOptions) {
    this.keys = pipelineKeys(o.config)
    this.log = (o.logger ?? silentLogger).child('reconciler')
    this.leaseKey = `${this.keys.stream}:reconciler`
    this.token = `${o.consumer}:${randomBytes(8).toString('hex')}`
    this.afterMs = reconcileAfterMs(o.config.worker)
    this.intervalMs = parseDuration(o.config.worker.reconcile_interval, 'worker.reconcile_interval')
    this.leaseMs = Math.max(3 * this.intervalMs, 1000)
    if (!o.redis.renewLease) o.redis.defineCommand('renewLease', {lua: RENEW, numberOfKeys: 1})
    if (!o.redis.releaseLease) o.redis.defineCommand('releaseLease', {lua: RELEASE, numberOfKeys: 1})
    const r = [o.registry]
    const self = this
    this.m = {
      leader: new Gauge({
        collect(this: Gauge) {
          this.set(self.leader ? 1 : 0)
        },
        help: '1 while this worker holds the reconciler lease',
        name: 'mq_worker_reconciler_leader',
        registers: r,
      }),
      passes: new Counter({help: 'Reconciler passes by outcome (ok, failed)', labelNames: ['outcome'], name: 'mq_worker_reconcile_passes_total', registers: r}),
      requeued: new Counter({help: 'Records re-enqueued because Redis had lost their stream entry', name: 'mq_worker_reconciled_total', registers: r}),
    }
  }

  get isLeader(): boolean {
    return this.leader
  }

  get enabled(): boolean {
    return this.afterMs !== undefined
  }

  start(): void {
    if (!this.enabled || !this.stopped) return
    this.stopped = false
    this.timer = setInterval(() => void this.tick(), this.intervalMs)
    void this.tick()
  }

  /** Stops, waits for a pass in progress and hands the lease back, so another worker takes over at once. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearInterval(this.timer)
    // a pass in progress may finish on its own (what it adds is delivered once); the lease goes back now
    let t: NodeJS.Timeout | undefined
    await Promise.race([this.passing, new Promise((r) => (t = setTimeout(r, 1000)))])
    clearTimeout(t)
    if (this.leader) {
      this.leader = false
      await this.o.redis.releaseLease(this.leaseKey, this.token).catch(() => {})
    }
  }

  /** Takes or renews the lease; the leader starts a pass unless one still runs. */
  private async tick(): Promise<void> {
    try {
      const was = this.leader
      if (this.leader) this.leader = Number(await this.o.redis.renewLease(this.leaseKey, this.token, this.leaseMs)) === 1
      if (!this.leader) this.leader = (await this.o.redis.set(this.leaseKey, this.token, 'PX', this.leaseMs, 'NX')) === 'OK'
      if (this.leader !== was) this.log.info(this.leader ? 'reconciler lease taken: this worker re-enqueues records Redis lost' : 'reconciler lease lost to another worker', {consumer: this.o.consumer, lease_ms: this.leaseMs})
    } catch (error) {
      // Redis is down: nothing can be re-enqueued; the lease expires on its own
      this.log.debug('reconciler lease check failed', {error})
      return
    }
    if (this.stopped && this.leader) {
      // stop() ran while this tick waited for Redis
      this.leader = false
      await this.o.redis.releaseLease(this.leaseKey, this.token).catch(() => {})
    }
    if (this.stopped || !this.leader || this.passing) return
    this.passing = this.pass()
      .then(() => this.m.passes.inc({outcome: 'ok'}))
      .catch((error) => {
        this.m.passes.inc({outcome: 'failed'})
        this.log.debug('reconciler pass failed; the next one tries again', {error})
      })
      .finally(() => (this.passing = undefined))
  }

  /** One pass: re-enqueues undelivered records older than reconcile_after that Redis does not hold. Returns how many. */
  async pass(): Promise<number> {
    if (this.afterMs === undefined) return 0
    let after = this.cursor
    let present: Set<string> | undefined
    let requeued = 0
    let pages = 0
    do {
      const q = new URLSearchParams({limit: String(PAGE), older_than_ms: String(this.afterMs)})
      if (after) q.set('after', after)
      const page: {messages: Undelivered[]; next: string | null} = await this.o.broker.call('GET', `/internal/messages/undelivered?${q}`)
      if (page.messages.length === 0) {
        after = null
        break
      }
      // read Redis once per pass, only when there is something to compare (most passes find nothing)
      present ??= await this.idsInRedis()
      const lost = page.messages.filter((m) => !present!.has(m.message_id))
      if (lost.length > 0) {
        const tx = this.o.redis.pipeline()
        for (const m of lost) tx.xadd(this.keys.stream, '*', 'id', m.message_id, 'client', m.client_id, 'attempts', String(m.attempts))
        const res = (await tx.exec()) ?? []
        const failed = res.find(([e]) => e)
        if (failed) throw failed[0]
        for (const m of lost) present.add(m.message_id)
        requeued += lost.length
        this.m.requeued.inc(lost.length)
      }
      after = page.next
    } while (after && ++pages < PAGES_PER_PASS && !this.stopped)
    this.cursor = after
    if (requeued > 0) this.log.warn('re-enqueued records that Redis had lost (a restart without persistence?)', {count: requeued, older_than_ms: this.afterMs})
    return requeued
  }

  /**
   * Message ids referenced in the retry set and the stream (pending entries included). The retry set
   * is read first: an entry moved from it to the stream meanwhile is appended at the stream's end,
   * which the stream read reaches last.
   */
  private async idsInRedis(): Promise<Set<string>> {
    const ids = new Set<string>()
    const r = this.o.redis
    for (let i = 0; ; i += SCAN) {
      const members = await r.zrange(this.keys.retry, i, i + SCAN - 1)
      for (const m of members) {
        try {
          ids.add(String((JSON.parse(m) as {id?: string}).id))
        } catch {
          // not ours
        }
      }
      if (members.length < SCAN) break
    }
    let start = '-'
    for (;;) {
      const entries = (await r.xrange(this.keys.stream, start, '+', 'COUNT', SCAN)) as [string, string[]][]
      for (const [, flat] of entries) {
        for (let k = 0; k + 1 < (flat?.length ?? 0); k += 2) if (flat[k] === 'id') ids.add(flat[k + 1])
      }
      if (entries.length < SCAN) break
      start = `(${entries[entries.length - 1][0]}`
    }
    return ids
  }
}

declare module 'ioredis' {
  interface RedisCommander<Context> {
    renewLease(key: string, token: string, ms: number): Result<number, Context>
    releaseLease(key: string, token: string): Result<number, Context>
  }
}
