/**
 * Cluster mode's queue backend: the broker's queues live in Redis, shared by every node of a named
 * cluster (docs/cluster.md). It drives the same Sessions as the in-memory Engine, so the native
 * server, the CipherMQ listener and the HTTPS API serve either unchanged (see ../backend.ts).
 *
 * - Definitions live in Redis hashes; a change is announced on the cluster's pub/sub channel and
 *   every node reloads its routing table (an in-memory Engine used as a registry only).
 * - One stream per queue with one consumer group: ready messages are entries past the group's
 *   last-delivered id, unacked ones are the group's pending entries. Each node reads with the
 *   consumer name `<node>.<epoch>` and holds a lease, renewed by a heartbeat stamped with Redis's
 *   clock. A node whose heartbeat is older than claim_ms is dead: any live node moves its pending
 *   entries back to the queue (delivery count kept, flagged redelivered).
 * - Fencing: a node delivers only while its lease is valid; once it lapses (paused, cut off) it drops
 *   what it had read, starts a new epoch (a new consumer name) and its stale acks and nacks are refused
 *   by the scripts, which check that the entry is still pending for the consumer that read it.
 */
import {hostname} from 'node:os'
import {performance} from 'node:perf_hooks'

import {Cluster, Redis} from 'ioredis'

import {MqError, PermissionError, TempFailError, UsageError, errorText} from '../../errors.js'
import type {Logger} from '../../log.js'
import {MessageIds} from '../../wire/ids.js'
import {NO_HEADERS, isHeaderName} from '../../wire/protocol.js'
import {type BrokerDefinitions, type BrokerStats, type ClusterNode, type ClusterStatus, type ExchangeType, type MessageStatus, type MessageStatusInfo, type QueueStats, STATUS_NAMES} from '../../wire/types.js'
import type {BrokerEngine, CommitTracker, Sync} from '../backend.js'
import {ALLOW_ALL, DEFAULT_QUEUE, type DeliveryOut, Engine, Exchange, NotFoundError, type Permissions, type PublishOptions, type PublishResult, Queue, type QueueOptions, Session, type SessionSink, nextConsumer} from '../engine.js'
import type {Message} from '../message.js'
import {MemoryWatermark} from '../memory.js'
import {PACKED_VERSION, type RawEntry, entryMessage, headersJson, packInto, packedBound} from './entry.js'
import {ClusterKeys, GROUP} from './keys.js'
import {type RedisClient, defineScripts, runScript} from './scripts.js'
import {latestPerNode} from './nodes.js'

export type Durability = ClusterStatus['durability']['mode']

export interface ClusterEngineOptions {
  url: string
  name: string
  /** a node whose heartbeat is older than this is dead; its unacked messages are redelivered */
  claimMs: number
  durability: Durability
  logger: Logger
  deliveryLimit?: number
  maxUnacked?: number
  dedupeWindowMs?: number
  dedupeMax?: number
  /** settled message ids remembered per queue for `mq message status` */
  statusCapacity?: number
  /** what this node tells the others about itself (addresses, connections) */
  info?: () => Record<string, unknown>
  /** a node shared a newer CRL: the runtime checks it against its CA and enforces it */
  onCrl?: (pem: Buffer) => void
}

const STATUS_CODE = Object.fromEntries(STATUS_NAMES.map((s, i) => [s, i])) as Record<MessageStatus, number>
/** the settle script's status code for "remove it, record no status" */
const NO_RECORD = -1
const EMPTY = Buffer.alloc(0)
const LEASE_SHARE = 0.8
const READ_MAX = 500
/**
 * While this node publishes to a queue it has consumers of, its publish runs claim the new entries
 * (see PUBLISH) and the queue's blocking read stays off; it resumes this long after the last run
 * (sent or answered). The cost: a message another node publishes just then waits up to this long.
 */
const LOCAL_MS = 50

interface Entry {
  sid: string
  /** the consumer name that read it: acks and requeues only succeed while it still owns the entry */
  owner: string
  queue: string
  msg: Message
}

interface PubItem {
  /** the message as published (no expiry): delivered from here when the publish run claims it for a local consumer */
  msg: Message
  dedupe: boolean
  /** its headers as JSON, undefined when it has none */
  headers: string | undefined
}

interface CConsumer {
  tag: string
  queue: CQueue
  session: Session
  prefetch: number
  noAck: boolean
  inflight: number
}

interface CUnacked {
  entry: Entry
  consumer?: CConsumer
}

class CQueue {
  readonly consumers: CConsumer[] = []
  rr = 0
  buffer: Entry[] = []
  reading = false
  /** a blocking read of this queue is waiting in Redis: publish runs must not claim meanwhile (order) */
  blocking = false
  /** entries asked for by publish runs still in flight */
  claiming = 0
  /** when this node last sent a publish run for this queue, or had its answer (performance.now()) */
  lastPublish = -Infinity
  wake?: () => void
  published = 0
  delivered = 0
  acked = 0
  constructor(readonly name: string) {}
}

type Raw = RawEntry

function parseEntry(raw: Raw, queue: string, owner: string): Entry {
  return {msg: entryMessage(raw[1]), owner, queue, sid: raw[0].toString('latin1')}
}

/** Parses broker.cluster.url: redis[s]://, redis-cluster://h:p,h:p (Redis Cluster seeds), redis-sentinel://h:p,h:p/master. */
export function clusterClient(url: string): RedisClient {
  const opts = {enableAutoPipelining: true, maxRetriesPerRequest: null}
  const m = /^redis-(cluster|sentinel)(s?):\/\/(?:([^@]*)@)?([^/]+)(?:\/(.*))?$/.exec(url)
  if (!m) return new Redis(url, opts)
  const hosts = m[4].split(',').map((h) => {
    const i = h.lastIndexOf(':')
    return i < 0 ? {host: h, port: m[1] === 'cluster' ? 6379 : 26_379} : {host: h.slice(0, i), port: Number(h.slice(i + 1))}
  })
  const password = m[3] ? decodeURIComponent(m[3].split(':').pop() ?? '') : undefined
  const tls = m[2] ? {} : undefined
  if (m[1] === 'cluster') return new Cluster(hosts, {redisOptions: {maxRetriesPerRequest: null, password, tls}})
  return new Redis({...opts, name: m[5] || 'mymaster', password, sentinels: hosts, tls})
}

/** Tracks the writes of a tick so a confirm can wait for them (the store's afterCommit, for Redis). */
class Commits implements CommitTracker {
  private open: Promise<unknown>[] = []
  private tail: Promise<void> = Promise.resolve()
  readonly inflight = new Set<Promise<unknown>>()

  track<T>(p: Promise<T>): Promise<T> {
    this.open.push(p)
    this.inflight.add(p)
    p.then(
      () => this.inflight.delete(p),
      () => this.inflight.delete(p),
    )
    return p
  }

  flush(): Promise<void> {
    return new Promise((resolve) => this.afterCommit(() => resolve()))
  }

  afterCommit(cb: (err?: Error) => void): void {
    const group = Promise.allSettled(this.open)
    this.open = []
    // chained, so confirms come back in the order they were asked for
    this.tail = this.tail.then(async () => {
      const results = await group
      const bad = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
      try {
        cb(bad ? (bad.reason instanceof Error ? bad.reason : new Error(String(bad.reason))) : undefined)
      } catch {}
    })
  }
}

/**
 * Gathers the writes of one event-loop turn per key (a queue, or a queue and a status) into one
 * script run. Redis fsyncs its AOF once per turn of its own loop and reads at most 16 KB of a
 * connection per turn, so one command per message left each fsync covering a few dozen messages;
 * one command per batch lets it cover the whole batch. Runs go out in the order their batches were
 * opened, on one connection, so a queue's writes keep their order.
 * One promise per batch, not per call: an ack is one call, and a promise and its callbacks per ack
 * were a good part of the node's garbage. A caller finds its own results by its items' positions.
 */
class Coalescer<T, R> {
  private readonly open = new Map<string, Batch<T, R>>()
  private scheduled = false

  constructor(
    /** one run for a batch; its result is the batch's (the publish flags: one character per item, in order) */
    private readonly run: (key: string, items: T[]) => Promise<R>,
    private readonly maxItems = 1000,
    private readonly maxBytes = 1 << 20,
  ) {}

  /** Adds one item; `fresh` when it opened a batch (its promise is new). */
  add(key: string, item: T, bytes: number): Batch<T, R> {
    let b = this.open.get(key)
    if (b && (b.items.length >= this.maxItems || b.bytes > this.maxBytes)) {
      // a full batch goes now; later ones follow it on the same connection
      this.open.delete(key)
      this.flushOne(key, b)
      b = undefined
    }
    if (!b) {
      this.open.set(key, (b = new Batch<T, R>()))
      if (!this.scheduled) {
        this.scheduled = true
        // after the I/O callbacks of this turn: every frame the sockets had is in the batch
        setImmediate(() => this.flush())
      }
    } else b.fresh = false
    b.items.push(item)
    b.bytes += bytes
    return b
  }

  flush(): void {
    this.scheduled = false
    const batches = [...this.open]
    this.open.clear()
    for (const [key, b] of batches) this.flushOne(key, b)
  }

  private flushOne(key: string, b: Batch<T, R>): void {
    let p: Promise<R>
    try {
      p = this.run(key, b.items)
    } catch (error) {
      p = Promise.reject(error)
    }
    p.then(b.resolve, b.reject)
  }
}

class Batch<T, R> {
  readonly items: T[] = []
  bytes = 0
  /** the last add opened this batch */
  fresh = true
  resolve!: (r: R) => void
  reject!: (e: unknown) => void
  readonly done = new Promise<R>((resolve, reject) => {
    this.resolve = resolve
    this.reject = reject
  })
  constructor() {
    // the callers handle the error (a batch nobody awaits must not be an unhandled rejection)
    this.done.catch(() => {})
  }
}

/** XREADGROUP with binary replies (ioredis types know no Buffer variant, and its callBuffer breaks under auto-pipelining) */
function readGroup(r: RedisClient, consumer: string, count: number, blockMs: number, stream: string): Promise<unknown> {
  const args = ['GROUP', GROUP, consumer, 'COUNT', count, ...(blockMs > 0 ? ['BLOCK', blockMs] : []), 'STREAMS', stream, '>']
  return (r as unknown as {xreadgroupBuffer: (...a: unknown[]) => Promise<unknown>}).xreadgroupBuffer(...args)
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref())

export class ClusterEngine implements BrokerEngine {
  readonly keys: ClusterKeys
  readonly nodeId: string
  private epoch = 1
  private consumerName: string
  /** the routing table: an in-memory Engine used for definitions only */
  private defs = new Engine({statusCapacity: 1})
  private readonly cqueues = new Map<string, CQueue>()
  private readonly unacked = new WeakMap<Session, Map<number, CUnacked>>()
  readonly sessions = new Set<Session>()
  private readonly commits = new Commits()
  /** publishes and settles of one turn, one script run per queue (see Coalescer) */
  private readonly publishes = new Coalescer<PubItem, string>((queue, items) => this.runPublish(queue, items))
  private readonly settles = new Coalescer<Entry, void>((key, es) => this.runSettle(key, es))
  /** local definition changes (generation) and their Redis writes still in flight */
  private defsGen = 0
  private defWrites = 0
  /** the backlog lives in Redis: no watermark of this process's memory pauses publishers (0 = none) */
  readonly memory = new MemoryWatermark(0)
  private readonly ids = new MessageIds()
  private ctagSeq = 1
  private leaseUntil = 0
  private stopped = false
  private timers: NodeJS.Timeout[] = []
  private hbBusy = false
  private readonly readers = new Set<RedisClient>()
  private claimBusy = false
  private readonly started = Date.now()
  private depth = new Map<string, {ready: number; pending: number}>()
  private nodes: ClusterNode[] = []
  private keyCache = new Map<string, {encCertPem: string; signCertPem: string}>()
  private reloadTimer?: NodeJS.Timeout
  private durabilityNote = {detail: 'not checked', promised: false}
  private lastWarn = 0
  readonly deliveryLimit: number
  readonly maxUnacked: number
  private readonly dedupeWindowMs: number
  private readonly dedupeMax: number
  private readonly statusCapacity: number
  totals = {acknowledged: 0, deadLettered: 0, delivered: 0, published: 0, unroutable: 0}
  private rateSample = {acknowledged: 0, delivered: 0, published: 0, t: Date.now()}
  private rates = {ack: 0, deliver: 0, publish: 0}
  counters = {claimed: 0, fencedSettles: 0, fences: 0}

  private constructor(
    readonly redis: RedisClient,
    private readonly sub: RedisClient,
    readonly opts: ClusterEngineOptions,
  ) {
    this.keys = new ClusterKeys(opts.name)
    this.nodeId = `${hostname().split('.')[0]}-${process.pid}-${Math.random().toString(36).slice(2, 6)}`
    this.consumerName = `${this.nodeId}.${this.epoch}`
    this.deliveryLimit = opts.deliveryLimit ?? 20
    this.maxUnacked = opts.maxUnacked ?? 10_000
    this.dedupeWindowMs = opts.dedupeWindowMs ?? 24 * 3600 * 1000
    this.dedupeMax = opts.dedupeMax ?? 100_000
    this.statusCapacity = opts.statusCapacity ?? 100_000
  }

  /** Connects, checks what durability the Redis promises, loads the definitions and joins the cluster. */
  static async connect(opts: ClusterEngineOptions): Promise<ClusterEngine> {
    const redis = clusterClient(opts.url)
    const sub = clusterClient(opts.url)
    const log = opts.logger
    for (const r of [redis, sub]) r.on('error', (e: Error) => log.debug('redis connection error', {error: e.message}))
    defineScripts(redis)
    const e = new ClusterEngine(redis, sub, opts)
    try {
      await redis.ping()
    } catch (error) {
      redis.disconnect()
      sub.disconnect()
      throw new MqError('E_CLUSTER_UNAVAILABLE', `cannot reach the cluster's Redis at ${opts.url.replace(/\/\/[^@/]*@/, '//***@')}: ${errorText(error)}`, {exit: 69, hint: 'Try this: check broker.cluster.url (MQ_BROKER_CLUSTER_URL) and that Redis is up'})
    }
    await e.checkDurability()
    await e.ensureDefaults()
    await e.reloadDefs()
    await e.loadKeys()
    await sub.subscribe(e.keys.events)
    sub.on('message', (_ch: string, text: string) => e.onEvent(text))
    // a node of a version before the packed entry layout would deliver this node's entries empty
    // (and its consumers' acks would then lose them): not joined while one is alive
    await e.refresh()
    const older = e.nodes.filter((n) => n.alive && !(Number(n.info.layout) >= PACKED_VERSION))
    if (older.length > 0) {
      redis.disconnect()
      sub.disconnect()
      throw new MqError('E_CLUSTER_VERSION', `cluster ${opts.name} has ${older.length} live node(s) of an older mq version (${older.map((n) => n.node).join(', ')}) that cannot read the queue entries this version writes`, {exit: 69, hint: 'Try this: stop the older nodes first, then start the upgraded ones (docs/cluster.md, "Stream entries")'})
    }
    await e.heartbeat()
    await e.refresh()
    return e
  }

  get store(): CommitTracker {
    return this.commits
  }

  get queues(): Map<string, Queue> {
    return this.defs.queues
  }

  /** ---- durability ---- */

  private async checkDurability(): Promise<void> {
    const log = this.opts.logger
    if (this.opts.durability !== 'fsync') {
      this.durabilityNote = {detail: 'broker.cluster.durability is "write": a confirm means Redis has the message in memory', promised: false}
      return
    }
    let detail: string
    let promised = false
    try {
      const [, aof] = (await this.redis.config('GET', 'appendonly')) as string[]
      const [, fsync] = (await this.redis.config('GET', 'appendfsync')) as string[]
      if (aof !== 'yes') detail = 'Redis runs without the append-only file (appendonly no): a confirmed message is lost if Redis restarts'
      else if (fsync !== 'always') detail = `Redis fsyncs its append-only file "${fsync}", not "always": up to a second of confirmed messages is lost if the machine fails`
      else {
        detail = 'appendonly yes, appendfsync always: a confirm means the message is on Redis\'s disk'
        promised = true
      }
    } catch (error) {
      detail = `cannot read Redis's AOF settings (${errorText(error)}): durability on disk is not verified`
    }
    this.durabilityNote = {detail, promised}
    if (!promised) log.warn(`cluster durability: ${detail}`, {hint: 'Try this: redis-server --appendonly yes --appendfsync always, or set broker.cluster.durability: write to accept it'})
  }

  /** ---- definitions ---- */

  private async ensureDefaults(): Promise<void> {
    const k = this.keys
    await this.redis.hsetnx(k.exchanges, 'default_exchange', 'direct')
    if (await this.redis.hsetnx(k.queues, DEFAULT_QUEUE, JSON.stringify({durable: true}))) await this.redis.sadd(k.bindings, JSON.stringify(['default_exchange', DEFAULT_QUEUE, 'default_key']))
    await this.createGroup(DEFAULT_QUEUE)
  }

  private async createGroup(queue: string): Promise<void> {
    await this.redis.xgroup('CREATE', this.keys.queue(queue).stream, GROUP, '0', 'MKSTREAM').catch((e: Error) => {
      if (!/BUSYGROUP/.test(e.message)) throw e
    })
  }

  /** Rebuilds the routing table from Redis; local consumers of a queue that is gone are cancelled. */
  async reloadDefs(): Promise<void> {
    const k = this.keys
    let ex: Record<string, string>, qs: Record<string, string>, binds: string[]
    for (;;) {
      const gen = this.defsGen
      ;[ex, qs, binds] = await Promise.all([this.redis.hgetall(k.exchanges), this.redis.hgetall(k.queues), this.redis.smembers(k.bindings)])
      // a local declaration whose writes were not all in Redis when this read ran: read again once they are
      if (gen === this.defsGen && this.defWrites === 0) break
      if (this.stopped) return
      await sleep(50)
    }
    const defs = new Engine({statusCapacity: 1})
    for (const [name, type] of Object.entries(ex)) defs.exchanges.set(name, new Exchange(name, type as ExchangeType, true))
    for (const [name, json] of Object.entries(qs)) {
      const d = JSON.parse(json) as {durable?: boolean; deadLetter?: string; defaultDeadLetter?: boolean; ttlMs?: number; maxLength?: number}
      const q = new Queue(name, d.durable ?? false, d.deadLetter, d.ttlMs, d.maxLength)
      q.defaultDeadLetter = d.defaultDeadLetter ?? false
      defs.queues.set(name, q)
    }
    for (const b of binds) {
      const [e, q, key] = JSON.parse(b) as [string, string, string]
      if (defs.queues.has(q)) defs.exchanges.get(e)?.bind(q, key)
    }
    this.defs = defs
    for (const cq of this.cqueues.values()) if (!defs.queues.has(cq.name)) this.dropLocalQueue(cq)
  }

  private onEvent(text: string): void {
    let ev: {t?: string; name?: string; v?: {encCertPem: string; signCertPem: string}}
    try {
      ev = JSON.parse(text)
    } catch {
      return
    }
    if (ev.t === 'key' && ev.name && ev.v) {
      this.keyCache.set(ev.name, ev.v)
      return
    }
    if (ev.t === 'crl') {
      this.sharedCrl()
        .then((crl) => crl && this.opts.onCrl?.(crl.pem))
        .catch((error) => this.opts.logger.warn('reading the cluster CRL failed', {error: errorText(error)}))
      return
    }
    // coalesce a burst of declarations into one reload
    if (this.reloadTimer) return
    this.reloadTimer = setTimeout(() => {
      this.reloadTimer = undefined
      this.reloadDefs().catch((error) => this.opts.logger.warn('reloading the cluster definitions failed', {error: errorText(error)}))
    }, 5)
  }

  /** a definition write: tracked for the confirm, and no reload replaces the routing table while it is in flight */
  private defWrite(p: Promise<unknown>): void {
    this.defsGen++
    this.defWrites++
    const done = () => {
      this.defWrites--
    }
    p.then(done, done)
    this.commits.track(p)
  }

  /**
   * Offers this node's CRL to the cluster: kept only when newer (by `order`, see crlOrder) than the
   * one Redis holds, then announced, so a revocation made on any node's home reaches every node.
   */
  async shareCrl(pem: Buffer, order: number): Promise<boolean> {
    const replaced = Number(await runScript(this.redis, 'mqShareCrl', [this.keys.crl], [pem.toString(), order]))
    if (replaced !== 1) return false
    await this.redis.publish(this.keys.events, JSON.stringify({by: this.consumerName, t: 'crl'}))
    return true
  }

  /** the newest CRL shared in the cluster, if any */
  async sharedCrl(): Promise<{pem: Buffer; order: number} | undefined> {
    const [pem, t] = await this.redis.hmget(this.keys.crl, 'pem', 'order')
    return pem && t ? {pem: Buffer.from(pem), order: Number(t)} : undefined
  }

  private announce(): Promise<unknown> {
    return this.redis.publish(this.keys.events, JSON.stringify({by: this.consumerName, t: 'defs'}))
  }

  declareExchange(name: string, type: ExchangeType, opts: {durable?: boolean} = {}): Exchange {
    const had = this.defs.exchanges.has(name)
    const ex = this.defs.declareExchange(name, type, opts)
    if (!had) this.defWrite(this.redis.hsetnx(this.keys.exchanges, name, type).then(() => this.announce()))
    return ex
  }

  declareQueue(name: string, opts: QueueOptions = {}): Queue & {ready: {length: number}} {
    const before = new Set(this.defs.queues.keys())
    const q = this.defs.declareQueue(name, opts)
    const created = [...this.defs.queues.values()].filter((x) => !before.has(x.name))
    if (created.length > 0) {
      this.defWrite(
        (async () => {
          for (const c of created) {
            await this.redis.hsetnx(this.keys.queues, c.name, JSON.stringify({deadLetter: c.deadLetter, defaultDeadLetter: c.defaultDeadLetter, durable: c.durable, maxLength: c.maxLength, ttlMs: c.ttlMs}))
            await this.createGroup(c.name)
          }
          await this.announce()
        })(),
      )
    }
    // what the cluster holds, not the in-memory registry's (empty) deque
    const ready = this.depth.get(name)?.ready ?? 0
    return Object.assign(Object.create(q) as Queue, {ready: {length: ready}})
  }

  bind(queue: string, exchange: string, key: string): void {
    this.defs.bind(queue, exchange, key)
    const ex = this.defs.exchanges.get(exchange)!
    this.defWrite(this.redis.sadd(this.keys.bindings, JSON.stringify([exchange, queue, ex.type === 'fanout' ? '' : key])).then(() => this.announce()))
  }

  unbind(queue: string, exchange: string, key: string): void {
    const ex = this.defs.exchanges.get(exchange)
    this.defs.unbind(queue, exchange, key)
    this.defWrite(this.redis.srem(this.keys.bindings, JSON.stringify([exchange, queue, ex!.type === 'fanout' ? '' : key])).then(() => this.announce()))
  }

  async deleteExchange(name: string, opts: {ifUnused?: boolean} = {}): Promise<number> {
    const bindings = this.defs.listBindings().filter((b) => b.exchange === name)
    const n = this.defs.deleteExchange(name, opts)
    await this.redis.hdel(this.keys.exchanges, name)
    for (const b of bindings) await this.redis.srem(this.keys.bindings, JSON.stringify([b.exchange, b.queue, b.routingKey]))
    await this.announce()
    return n
  }

  /**
   * The ready entries of a queue's stream are those after its group's last-delivered id (read and acked
   * ones are deleted, read and unacked ones are pending): XRANGE from there reads them without the group,
   * so nothing is claimed, counted or flagged. Entries a node has read but not yet handed out are not shown.
   */
  async peek(queue: string, count: number): Promise<{messages: Message[]; ready: number}> {
    if (!this.defs.queues.has(queue)) throw new NotFoundError('queue', queue)
    const stream = this.keys.queue(queue).stream
    const groups = (await this.redis.xinfo('GROUPS', stream).catch(() => [])) as unknown[][]
    let last = '0-0'
    for (const g of groups) {
      const info: Record<string, unknown> = {}
      for (let i = 0; i + 1 < g.length; i += 2) info[String(g[i])] = g[i + 1]
      if (String(info.name) === GROUP) last = String(info['last-delivered-id'] ?? '0-0')
    }
    const now = Date.now()
    const out: Message[] = []
    let from = `(${last}`
    while (out.length < count) {
      const raws = await this.xrange(stream, from, '+', Math.max(16, count - out.length))
      if (raws.length === 0) break
      for (const raw of raws) {
        const e = parseEntry(raw, queue, '')
        if (!(e.msg.expiresAt && e.msg.expiresAt <= now) && out.length < count) out.push(e.msg)
      }
      from = `(${raws[raws.length - 1][0].toString()}`
    }
    return {messages: out, ready: await this.readyCount(queue)}
  }

  definitions(): BrokerDefinitions {
    return this.defs.definitions()
  }

  async deleteQueue(name: string): Promise<number> {
    if (!this.defs.queues.has(name)) throw new NotFoundError('queue', name)
    const bindings = this.defs.listBindings().filter((b) => b.queue === name)
    const ready = await this.readyCount(name)
    this.defs.deleteQueue(name)
    const cq = this.cqueues.get(name)
    if (cq) this.dropLocalQueue(cq)
    const k = this.keys.queue(name)
    await this.redis.hdel(this.keys.queues, name)
    for (const b of bindings) await this.redis.srem(this.keys.bindings, JSON.stringify([b.exchange, b.queue, b.routingKey]))
    for (const key of [k.stream, k.ids, k.dedupe, k.done, k.doneLog]) await this.redis.del(key)
    await this.announce()
    return ready
  }

  async purgeQueue(name: string): Promise<number> {
    if (!this.defs.queues.has(name)) throw new NotFoundError('queue', name)
    const k = this.keys.queue(name)
    let total = 0
    for (;;) {
      const n = Number(await runScript(this.redis, 'mqPurge', [k.stream, k.ids, k.done, k.doneLog], [this.consumerName, STATUS_CODE.purged, this.statusCapacity, 10_000]))
      total += n
      if (n < 10_000) return total
    }
  }

  /** XRANGE with binary replies (a packed entry is not text) */
  private async xrange(stream: string, from: string, to: string, count?: number): Promise<Raw[]> {
    const r = this.redis as unknown as {xrangeBuffer: (...a: unknown[]) => Promise<Raw[] | null>}
    return (await (count === undefined ? r.xrangeBuffer(stream, from, to) : r.xrangeBuffer(stream, from, to, 'COUNT', count))) ?? []
  }

  private async readyCount(name: string): Promise<number> {
    const k = this.keys.queue(name).stream
    const [len, pending] = await Promise.all([this.redis.xlen(k), this.redis.xpending(k, GROUP).catch(() => [0]) as Promise<unknown[]>])
    return Math.max(0, len - Number(pending[0] ?? 0))
  }

  /** the local side of a deleted queue: its consumers are cancelled, what was read is given back */
  private dropLocalQueue(cq: CQueue): void {
    for (const c of [...cq.consumers]) {
      this.cancel(c.session, c.tag)
      c.session.sink.cancelled?.(c.tag)
    }
    this.cqueues.delete(cq.name)
    cq.buffer = []
    cq.wake?.()
  }

  /** ---- key directory ---- */

  private async loadKeys(): Promise<void> {
    const all = await this.redis.hgetall(this.keys.keyDirectory)
    for (const [name, json] of Object.entries(all)) this.keyCache.set(name, JSON.parse(json))
  }

  getKey(name: string): {encCertPem: string; signCertPem: string} | null {
    return this.keyCache.get(name) ?? null
  }

  async putKey(name: string, encCertPem: string, signCertPem: string): Promise<void> {
    const v = {encCertPem, signCertPem}
    await this.redis.hset(this.keys.keyDirectory, name, JSON.stringify(v))
    this.keyCache.set(name, v)
    await this.redis.publish(this.keys.events, JSON.stringify({name, t: 'key', v}))
  }

  /** ---- sessions ---- */

  openSession(identity: string, sink: SessionSink, perms: Permissions = ALLOW_ALL): Session {
    const s = new Session(this as unknown as Engine, identity, sink, perms)
    this.sessions.add(s)
    this.unacked.set(s, new Map())
    return s
  }

  closeSession(s: Session): void {
    if (s.closed) return
    s.closed = true
    this.sessions.delete(s)
    for (const tag of [...s.consumers.keys()]) this.cancel(s, tag)
    const un = this.unacked.get(s)!
    const entries = [...un.values()].map((u) => u.entry)
    un.clear()
    s.unacked.clear()
    this.requeue(entries, true)
  }

  kick(s: Session): void {
    for (const c of s.consumers.values()) this.dispatch((c as unknown as CConsumer).queue)
  }

  whenFlowing(_queue: string, cb: () => void): void {
    // the backlog is in Redis, not in this process's memory: nothing to wait for
    cb()
  }

  /** ---- publish ---- */

  /**
   * `mq queue redrive` republishes a dead letter (same id, header x-redriven-from = its dead-letter
   * queue) and only then acks it there, on the same connection: that ack must not record
   * "acknowledged" for a message now waiting in the queue it was redriven to. Bounded: an id whose
   * ack never comes (a redrive that died) is forgotten oldest first.
   */
  private readonly redriven = new Map<string, string>()

  private noteRedriven(messageId: string, from: string): void {
    if (this.redriven.size >= 10_000) this.redriven.delete(this.redriven.keys().next().value!)
    this.redriven.set(messageId, from)
  }

  private route(exchange: string, routingKey: string): string[] {
    let targets: string[]
    if (exchange === '') targets = this.defs.queues.has(routingKey) ? [routingKey] : []
    else {
      const ex = this.defs.exchanges.get(exchange)
      if (!ex) throw new NotFoundError('exchange', exchange)
      targets = ex.route(routingKey)
    }
    if (targets.length === 0) {
      // the engine's routing error, word for word: the in-memory registry raises it
      this.defs.publish(exchange, routingKey, EMPTY)
      throw new MqError('E_UNROUTABLE', `nothing is bound to ${exchange} with key ${routingKey}`)
    }
    return targets
  }

  private checkIds(ids: (string | undefined)[]): void {
    for (const id of ids) {
      if (id !== undefined && (id.length === 0 || id.length > 200)) throw new UsageError('E_BAD_MESSAGE_ID', 'message id must be 1-200 characters', {hint: 'Try this: omit it to get a UUID'})
    }
  }

  publish(exchange: string, routingKey: string, body: Buffer, opts: PublishOptions = {}, perms: Permissions = ALLOW_ALL): PublishResult {
    this.checkIds([opts.messageId])
    const headers = opts.headers ?? (NO_HEADERS as Record<string, string>)
    for (const k in headers) if (!isHeaderName(k)) throw new UsageError('E_BAD_HEADER', `header name ${JSON.stringify(k.slice(0, 40))} is not allowed (1-128 letters, digits, _ . : -)`, {hint: 'Try this: rename the header'})
    return this.publishAll(exchange, routingKey, [body], [opts.messageId], headers, Boolean(opts.dedupe && opts.messageId !== undefined), perms)
  }

  publishMany(exchange: string, routingKey: string, bodies: Buffer[], ids: (string | undefined)[], perms: Permissions = ALLOW_ALL, headers: Record<string, string> = NO_HEADERS as Record<string, string>): PublishResult {
    this.checkIds(ids)
    for (const k in headers) if (!isHeaderName(k)) throw new UsageError('E_BAD_HEADER', `header name ${JSON.stringify(k.slice(0, 40))} is not allowed (1-128 letters, digits, _ . : -)`, {hint: 'Try this: rename the header'})
    return this.publishAll(exchange, routingKey, bodies, ids, headers, false, perms)
  }

  private publishAll(exchange: string, routingKey: string, bodies: Buffer[], ids: (string | undefined)[], headers: Record<string, string>, dedupe: boolean, perms: Permissions): PublishResult {
    if (!perms.canPublish(exchange)) throw new PermissionError('E_FORBIDDEN', `not allowed to publish to exchange ${JSON.stringify(exchange)}`, {hint: 'Try this: ask an admin to add it to broker.permissions[].publish'})
    const timestamp = Date.now()
    if (headers !== NO_HEADERS && headers['x-redriven-from'] !== undefined) for (const id of ids) if (id !== undefined) this.noteRedriven(id, headers['x-redriven-from'])
    const msgs: Message[] = bodies.map((body, i) => ({body, deliveryCount: 0, exchange, expiresAt: 0, headers, messageId: ids[i] ?? this.ids.next(), redelivered: false, routingKey, seq: 0, timestamp, idHash1: 0, idHash2: 0}))
    const r: PublishResult = {durable: true, messageId: msgs.at(-1)!.messageId, queues: []}
    let targets: string[] | undefined
    try {
      targets = this.route(exchange, routingKey)
    } catch (error) {
      // a queue or binding declared on another node a moment ago may not have reached this one yet:
      // reload once before the publish fails (the error then comes with the confirm)
      if (!(error instanceof MqError) || !['E_NOT_FOUND', 'E_UNROUTABLE'].includes(error.code)) throw error
    }
    if (targets) {
      r.queues = targets
      r.durable = targets.some((q) => this.defs.queues.get(q)?.durable)
      const w = this.write(targets, msgs, dedupe, r)
      if (r.durable) this.commits.track(w)
      else w.catch((error) => this.warn('publish to a non-durable queue failed', error))
    } else {
      this.commits.track(
        this.reloadDefs().then(() => {
          let t: string[]
          try {
            t = this.route(exchange, routingKey)
          } catch (error) {
            this.totals.unroutable++
            throw error
          }
          r.queues.push(...t)
          return this.write(t, msgs, dedupe, r)
        }),
      )
    }
    return r
  }

  private async write(targets: string[], msgs: Message[], dedupe: boolean, r: PublishResult): Promise<void> {
    let stored = false
    // headers are the same for every message of a publish call (a PUBLISH_BATCH's are on its line)
    const headers = headersJson(msgs[0])
    await Promise.all(
      targets.map(async (qn) => {
        if (!this.defs.queues.has(qn)) return
        // the batches this call's messages went into (a full one goes out and the rest open the next)
        const used: Batch<PubItem, string>[] = []
        let at = 0
        for (const msg of msgs) {
          const b = this.publishes.add(qn, {dedupe, headers, msg}, packedBound(msg, headers) + 4)
          if (used.at(-1) !== b) used.push(b)
          at = b.items.length - 1
        }
        if (used.length === 1) {
          const flags = await used[0].done
          // dedupe is for single publishes: one message, its flag at `at`
          if (!dedupe || flags[at] !== '0') stored = true
        } else {
          await Promise.all(used.map((b) => b.done))
          stored = true
        }
        this.local(qn).published += msgs.length
      }),
    )
    this.totals.published += msgs.length
    if (dedupe && !stored) r.duplicate = true
  }

  /** One run of the publish script for the publishes of one queue gathered in one turn. */
  private async runPublish(queue: string, items: PubItem[]): Promise<string> {
    const q = this.defs.queues.get(queue)
    // deleted since the publish was taken: nothing to store it in (as when it is gone at publish)
    if (!q) return '0'.repeat(items.length)
    const k = this.keys.queue(queue)
    const owner = this.consumerName
    const epoch = this.epoch
    // local consumers with room take their entries in the same run; never while a blocking read of
    // the queue is out (its reply and this one come on different connections: order would be lost)
    const cq = this.cqueues.get(queue)
    let claim = 0
    if (cq) {
      cq.lastPublish = performance.now()
      if (cq.consumers.length > 0 && !cq.blocking && this.leaseValid()) claim = Math.min(READ_MAX, Math.max(0, this.room(cq) - cq.buffer.length - cq.claiming))
      cq.claiming += claim
    }
    // the whole batch as one argument: per message a u32 length and the packed value (entry.ts)
    let size = 0
    let dedupes = false
    for (const it of items) {
      size += packedBound(it.msg, it.headers) + 4
      if (it.dedupe) dedupes = true
    }
    const batch = Buffer.allocUnsafe(size)
    let off = 0
    for (const it of items) {
      const end = packInto(batch, off + 4, it.msg, it.headers)
      batch.writeUInt32BE(end - off - 4, off)
      off = end
    }
    let flags = ''
    if (dedupes) for (const it of items) flags += it.dedupe ? '1' : '0'
    const args: (string | number | Buffer)[] = [Date.now(), this.dedupeWindowMs, this.dedupeMax, q.maxLength ?? 0, owner, claim, items.length, q.ttlMs ?? 0, flags, batch.subarray(0, off)]
    let stored: Buffer, trimmed: Raw[], mine: Buffer, others: Raw[]
    try {
      ;[stored, trimmed, mine, others] = (await runScript(this.redis, 'mqPublish', [k.stream, k.ids, k.dedupe], args)) as [Buffer, Raw[], Buffer, Raw[]]
    } finally {
      if (cq) {
        cq.claiming -= claim
        cq.lastPublish = performance.now()
      }
    }
    if (mine.length > 0 || others.length > 0) this.takeClaimed(cq!, epoch, owner, items, mine, others, q.ttlMs)
    for (const raw of trimmed) this.deadLetter(parseEntry(raw, queue, owner), 'maxlen', 'dropped')
    return stored.toString('latin1')
  }

  /** Entries a publish run read for this node's consumers: handed out as the read loop's are. */
  private takeClaimed(cq: CQueue, epoch: number, owner: string, items: PubItem[], mine: Buffer, others: Raw[], ttlMs: number | undefined): void {
    // read under an epoch that has since been fenced: those entries belong to the claim now
    if (epoch !== this.epoch) return
    const entries: Entry[] = []
    // older entries first: they precede this batch's in the stream
    for (const raw of others) entries.push(parseEntry(raw, cq.name, owner))
    if (mine.length > 0) {
      const pairs = mine.toString('latin1').split(' ')
      for (let i = 0; i + 1 < pairs.length; i += 2) {
        const m = items[Number(pairs[i + 1]) - 1].msg
        // a copy per queue: delivery counts and flags are the queue's own
        entries.push({msg: {...m, expiresAt: ttlMs ? m.timestamp + ttlMs : 0}, owner, queue: cq.name, sid: pairs[i]})
      }
    }
    if (cq.consumers.length === 0 || this.cqueues.get(cq.name) !== cq) {
      // nobody left to take them: back to the queue, not counted as deliveries
      this.requeue(entries, false)
      return
    }
    for (const e of entries) cq.buffer.push(e)
    this.dispatch(cq)
  }

  settlePublished(messageId: string): boolean {
    for (const q of this.defs.queues.keys()) this.redis.zrem(this.keys.queue(q).dedupe, messageId).catch(() => {})
    return true
  }

  /** ---- consume ---- */

  private local(name: string): CQueue {
    let q = this.cqueues.get(name)
    if (!q) this.cqueues.set(name, (q = new CQueue(name)))
    return q
  }

  /**
   * Whether a queue exists. A queue declared on another node a moment ago may not have reached this
   * node's routing table yet: the definitions are reloaded once before the answer is no.
   */
  hasQueue(name: string): Sync<boolean> {
    if (this.defs.queues.has(name)) return true
    return this.reloadDefs().then(() => this.defs.queues.has(name))
  }

  /** a queue this node does not know yet is looked up in Redis first (see hasQueue) */
  consume(s: Session, queue: string, opts: {prefetch?: number; noAck?: boolean} = {}): Sync<string> {
    if (this.defs.queues.has(queue)) return this.consumeKnown(s, queue, opts)
    return this.reloadDefs().then(() => this.consumeKnown(s, queue, opts))
  }

  private consumeKnown(s: Session, queue: string, opts: {prefetch?: number; noAck?: boolean}): string {
    if (s.closed) throw new UsageError('E_CLOSED', 'the connection closed before the consumer started')
    if (!this.defs.queues.has(queue)) throw new NotFoundError('queue', queue)
    if (!s.perms.canConsume(queue)) throw new PermissionError('E_FORBIDDEN', `not allowed to consume from queue ${JSON.stringify(queue)}`, {hint: 'Try this: ask an admin to add it to broker.permissions[].consume'})
    const prefetch = opts.prefetch ?? 100
    if (!Number.isInteger(prefetch) || prefetch < 1 || prefetch > 65_535) throw new UsageError('E_BAD_PREFETCH', `prefetch ${prefetch} must be 1..65535`, {hint: 'Try this: --prefetch 100'})
    const q = this.local(queue)
    const c: CConsumer = {inflight: 0, noAck: opts.noAck ?? false, prefetch, queue: q, session: s, tag: `ctag-${this.ctagSeq++}`}
    q.consumers.push(c)
    s.consumers.set(c.tag, c as never)
    void this.readLoop(q)
    return c.tag
  }

  cancel(s: Session, consumerTag: string): void {
    const c = s.consumers.get(consumerTag) as unknown as CConsumer | undefined
    if (!c) return
    s.consumers.delete(consumerTag)
    const i = c.queue.consumers.indexOf(c)
    if (i >= 0) c.queue.consumers.splice(i, 1)
    for (const u of this.unacked.get(s)!.values()) if (u.consumer === c) u.consumer = undefined
    c.queue.wake?.()
  }

  async get(s: Session, queue: string, opts: {noAck?: boolean} = {}): Promise<DeliveryOut | null> {
    if (!(await this.hasQueue(queue))) throw new NotFoundError('queue', queue)
    if (!s.perms.canConsume(queue)) throw new PermissionError('E_FORBIDDEN', `not allowed to consume from queue ${JSON.stringify(queue)}`, {hint: 'Try this: ask an admin to add it to broker.permissions[].consume'})
    if (!opts.noAck && s.unacked.size >= this.maxUnacked) throw new TempFailError('E_TOO_MANY_UNACKED', `this connection holds ${s.unacked.size} unacknowledged messages (limit ${this.maxUnacked})`, {hint: 'Try this: ack messages before getting more'})
    const q = this.local(queue)
    for (;;) {
      let e = q.buffer.shift()
      if (!e) {
        if (!this.leaseValid()) throw new TempFailError('E_CLUSTER_LEASE', 'this node is not in contact with the cluster\'s Redis right now', {hint: 'Try this: retry in a few seconds, or use another node'})
        const owner = this.consumerName
        const res = (await readGroup(this.redis, owner, 1, 0, this.keys.queue(queue).stream)) as [Buffer, Raw[]][] | null
        if (!res || res[0][1].length === 0) return null
        e = parseEntry(res[0][1][0], queue, owner)
      }
      if (e.msg.expiresAt && e.msg.expiresAt <= Date.now()) {
        this.deadLetter(e, 'expired', 'expired')
        continue
      }
      return this.hand(s, q, e, undefined, opts.noAck ?? false)
    }
  }

  /** prefetch room of the local consumers of a queue (no-ack consumers count as 100) */
  private room(q: CQueue): number {
    let n = 0
    for (const c of q.consumers) n += c.noAck ? 100 : Math.max(0, c.prefetch - c.inflight)
    return n
  }

  private async readLoop(q: CQueue): Promise<void> {
    if (q.reading) return
    q.reading = true
    const conn = this.redis.duplicate()
    conn.on('error', () => {})
    this.readers.add(conn)
    const stream = this.keys.queue(q.name).stream
    try {
      while (!this.stopped && q.consumers.length > 0 && this.cqueues.get(q.name) === q) {
        // this node's publish runs are claiming for its consumers: no blocking read meanwhile (see LOCAL_MS)
        if (q.claiming > 0 || performance.now() - q.lastPublish < LOCAL_MS) {
          await sleep(LOCAL_MS)
          continue
        }
        const room = this.room(q) - q.buffer.length
        if (room <= 0 || !this.leaseValid()) {
          await new Promise<void>((r) => {
            q.wake = r
            setTimeout(r, room <= 0 ? 1000 : 100).unref()
          })
          q.wake = undefined
          continue
        }
        const epoch = this.epoch
        const owner = this.consumerName
        let res: [Buffer, Raw[]][] | null
        q.blocking = true
        try {
          res = (await readGroup(conn, owner, Math.min(room, READ_MAX), 1000, stream)) as [Buffer, Raw[]][] | null
        } catch (error) {
          q.blocking = false
          if (/NOGROUP/.test(errorText(error)) && this.defs.queues.has(q.name)) await this.createGroup(q.name).catch(() => {})
          else this.warn('reading a queue from Redis failed; retrying', error)
          await sleep(250)
          continue
        }
        q.blocking = false
        // read under an epoch that has since been fenced: those entries belong to the claim now
        if (!res || epoch !== this.epoch) continue
        for (const raw of res[0][1]) q.buffer.push(parseEntry(raw, q.name, owner))
        this.dispatch(q)
      }
    } finally {
      q.reading = false
      this.readers.delete(conn)
      conn.disconnect()
      if (q.consumers.length > 0 && !this.stopped && this.cqueues.get(q.name) === q) void this.readLoop(q)
      else if (q.buffer.length > 0) {
        // read but never handed out: back to the queue, not counted as a delivery
        this.requeue(q.buffer, false)
        q.buffer = []
      }
    }
  }

  private leaseValid(): boolean {
    return performance.now() < this.leaseUntil
  }

  /** Pushes read entries round-robin to local consumers with room in their prefetch window. */
  private dispatch(q: CQueue): void {
    while (q.buffer.length > 0 && q.consumers.length > 0) {
      if (!this.leaseValid()) {
        this.fence('the lease ran out before delivery')
        return
      }
      const chosen = nextConsumer(q, this.maxUnacked)
      if (!chosen) return
      const e = q.buffer.shift()!
      if (e.msg.expiresAt && e.msg.expiresAt <= Date.now()) {
        this.deadLetter(e, 'expired', 'expired')
        continue
      }
      chosen.session.sink.deliver(this.hand(chosen.session, q, e, chosen, chosen.noAck))
    }
    if (q.buffer.length < this.room(q)) q.wake?.()
  }

  private hand(s: Session, q: CQueue, e: Entry, c: CConsumer | undefined, noAck: boolean): DeliveryOut {
    const m = e.msg
    if (m.deliveryCount > 0) m.redelivered = true
    m.deliveryCount++
    const tag = s.nextTag++
    q.delivered++
    this.totals.delivered++
    if (noAck) {
      this.settle([e], 'acknowledged')
    } else {
      this.unacked.get(s)!.set(tag, {consumer: c, entry: e})
      s.unacked.set(tag, e as never)
      if (c) c.inflight++
    }
    return {consumerTag: c?.tag ?? '', deliveryTag: tag, msg: m, queue: q.name}
  }

  /** ---- acknowledgements ---- */

  private take(s: Session, tag: number): CUnacked {
    const un = this.unacked.get(s)!
    const u = un.get(tag)
    if (!u) throw new UsageError('E_UNKNOWN_TAG', `delivery tag ${tag} is not an unacknowledged delivery of this connection (already settled?)`, {hint: 'Try this: ack each delivery once, on the connection that received it'})
    un.delete(tag)
    s.unacked.delete(tag)
    if (u.consumer) u.consumer.inflight--
    return u
  }

  ack(s: Session, tag: number): void {
    const u = this.take(s, tag)
    const mid = u.entry.msg.messageId
    // a redriven dead letter lives on in the queue it was republished to (see noteRedriven): that status stands
    if (this.redriven.size > 0 && this.redriven.get(mid) === u.entry.queue) {
      this.redriven.delete(mid)
      this.settle([u.entry], 'acknowledged', false)
    } else this.settle([u.entry], 'acknowledged')
    if (u.consumer) this.dispatch(u.consumer.queue)
  }

  nack(s: Session, tag: number, requeue = true): void {
    const u = this.take(s, tag)
    if (requeue) this.requeue([u.entry], true)
    else this.deadLetter(u.entry, 'rejected', 'dead-lettered')
    if (u.consumer) this.dispatch(u.consumer.queue)
  }

  reject(s: Session, tag: number, reason = 'rejected'): void {
    const u = this.take(s, tag)
    this.deadLetter(u.entry, reason.slice(0, 200) || 'rejected', 'dead-lettered')
    if (u.consumer) this.dispatch(u.consumer.queue)
  }

  /**
   * Removes entries their owner still holds, recording a final status (unless `record` is false); a
   * refusal means another node claimed it.
   */
  private settle(entries: Entry[], status: MessageStatus, record = true): Promise<void> {
    // the batch key: the status code (a leading '-' records none) and the queue
    const head = `${record ? '' : '-'}${STATUS_CODE[status]}:`
    let last: Batch<Entry, void> | undefined
    let more: Promise<void>[] | undefined
    for (const e of entries) {
      const b = this.settles.add(head + e.queue, e, 0)
      if (b.fresh) this.commits.track(b.done).catch((error) => this.warn('settling messages in Redis failed', error))
      if (last && last !== b) (more ??= [last.done]).push(b.done)
      last = b
    }
    if (more) return Promise.all(more).then(() => {})
    return last ? last.done : Promise.resolve()
  }

  /** One run of the settle script for the settles of one queue and status gathered in one turn. */
  private async runSettle(key: string, es: Entry[]): Promise<void> {
    const i = key.indexOf(':')
    const queue = key.slice(i + 1)
    const record = key[0] !== '-'
    const status = STATUS_NAMES[Number(key.slice(record ? 0 : 1, i))]
    const k = this.keys.queue(queue)
    const args: (string | number)[] = [record ? STATUS_CODE[status] : NO_RECORD, this.statusCapacity]
    for (const e of es) args.push(e.sid, e.msg.messageId, e.owner)
    const res = (await runScript(this.redis, 'mqSettle', [k.stream, k.ids, k.done, k.doneLog], args)) as Buffer
    let refused = 0
    for (const x of res) if (x !== 0x31) refused++
    // counted once Redis took it: an ack refused by the fencing is not an ack
    if (status === 'acknowledged') {
      this.local(queue).acked += es.length - refused
      this.totals.acknowledged += es.length - refused
    }
    if (refused > 0) {
      this.counters.fencedSettles += refused
      this.opts.logger.info('settle refused: the message was claimed by another node meanwhile (it was redelivered there)', {queue, refused, status})
    }
  }

  /** Back to the tail of their queues (delivered: the delivery counts), or dead-lettered at the delivery limit. */
  private requeue(entries: Entry[], delivered: boolean): void {
    const byQueue = new Map<string, Entry[]>()
    for (const e of entries) if (this.defs.queues.has(e.queue)) byQueue.set(e.queue, [...(byQueue.get(e.queue) ?? []), e])
    for (const [queue, es] of byQueue) {
      const args: string[] = []
      for (const e of es) args.push(e.sid, e.owner)
      this.commits.track(this.move(queue, 'ids', delivered, args)).catch((error) => this.warn('requeueing messages in Redis failed', error))
    }
  }

  /** Runs the move script; entries at the delivery limit come back claimed by this node and are dead-lettered. */
  private async move(queue: string, mode: 'ids' | 'dead', delivered: boolean, args: string[]): Promise<number> {
    const k = this.keys.queue(queue)
    const me = this.consumerName
    const [moved, dead] = (await runScript(this.redis, 'mqMove', [k.stream, k.ids], [mode, me, this.deliveryLimit, mode === 'dead' ? this.opts.claimMs : 0, delivered ? '1' : '0', ...args])) as [number, [Buffer, number, Buffer[]][]]
    for (const [sid, d, fields] of dead) {
      const e = parseEntry([sid, fields], queue, me)
      e.msg.deliveryCount = Number(d)
      this.deadLetter(e, 'delivery-limit', 'dead-lettered')
    }
    return Number(moved)
  }

  /** To the queue's dead-letter queue (written there before it leaves this one), or dropped when it has none. */
  private deadLetter(e: Entry, reason: string, statusIfDropped: MessageStatus): void {
    const q = this.defs.queues.get(e.queue)
    // as the engine: TTL and max-length drop rather than fill the default NAME.dlq
    const dlq = q?.deadLetter && (statusIfDropped === 'dead-lettered' || !q.defaultDeadLetter) ? this.defs.queues.get(q.deadLetter) : undefined
    if (!dlq) {
      void this.settle([e], statusIfDropped)
      return
    }
    this.totals.deadLettered++
    const m = e.msg
    const moved: Message = {...m, deliveryCount: 0, headers: {...m.headers, 'x-death-count': String(m.deliveryCount), 'x-death-queue': e.queue, 'x-death-reason': reason}, redelivered: false}
    const p = this.write([dlq.name], [moved], false, {durable: true, messageId: m.messageId, queues: []}).then(() => this.settle([e], 'dead-lettered'))
    this.commits.track(p).catch((error) => this.warn('dead-lettering a message failed; it stays unacked and is redelivered', error))
  }

  /** ---- leases, heartbeats and claims ---- */

  start(): void {
    const every = (ms: number, fn: () => Promise<unknown> | void) => {
      const t = setInterval(() => {
        try {
          const r = fn()
          if (r instanceof Promise) r.catch((error) => this.warn('cluster housekeeping failed', error))
        } catch (error) {
          this.warn('cluster housekeeping failed', error)
        }
      }, ms)
      t.unref()
      this.timers.push(t)
    }
    const claimMs = this.opts.claimMs
    every(Math.max(50, Math.floor(claimMs / 5)), () => this.heartbeat())
    every(Math.max(100, Math.floor(claimMs / 4)), () => this.claimDead())
    every(1000, () => {
      this.sampleRates()
      return Promise.all([this.refresh(), this.expire()])
    })
    // a missed announcement must not leave a node routing with stale definitions for long
    every(5000, () => this.reloadDefs())
  }

  /** Renews the lease: the heartbeat is stamped with Redis's clock, the lease runs from when it was sent. */
  async heartbeat(): Promise<void> {
    if (this.hbBusy || this.stopped) return
    const sent = performance.now()
    if (this.leaseUntil > 0 && sent >= this.leaseUntil) this.fence('the heartbeat came too late (paused, overloaded or cut off from Redis)')
    this.hbBusy = true
    const epoch = this.epoch
    try {
      await runScript(this.redis, 'mqHeartbeat', [this.keys.heartbeats, this.keys.nodes], [this.consumerName, JSON.stringify(this.info())])
      if (epoch === this.epoch) this.leaseUntil = sent + this.opts.claimMs * LEASE_SHARE
    } catch (error) {
      this.warn('cluster heartbeat failed', error)
    } finally {
      this.hbBusy = false
    }
  }

  /** Lost the lease: what this node read is no longer its own. A new epoch starts under a new consumer name. */
  private fence(reason: string): void {
    this.counters.fences++
    this.opts.logger.warn('cluster lease lost: dropping what this node had read and rejoining under a new consumer name', {old: this.consumerName, reason})
    this.epoch++
    this.consumerName = `${this.nodeId}.${this.epoch}`
    this.leaseUntil = 0
    for (const q of this.cqueues.values()) q.buffer = []
  }

  private info(): Record<string, unknown> {
    const queues: Record<string, number[]> = {}
    for (const q of this.cqueues.values()) queues[q.name] = [q.consumers.length, q.published, q.delivered, q.acked]
    // layout: the stream entry layout this node writes (entry.ts); a node without it predates the packed one
    return {epoch: this.epoch, host: hostname(), layout: PACKED_VERSION, node: this.nodeId, pid: process.pid, queues, rates: this.rates, started: this.started, totals: this.totals, ...this.opts.info?.()}
  }

  /** Puts the unacked messages of dead consumers (no heartbeat for claim_ms) back into their queues. */
  async claimDead(): Promise<void> {
    if (this.claimBusy || !this.leaseValid()) return
    this.claimBusy = true
    try {
      const live = this.nodes.filter((n) => n.alive).map((n) => n.consumer)
      if (!live.includes(this.consumerName)) live.push(this.consumerName)
      for (const q of this.defs.queues.keys()) {
        const n = await this.move(q, 'dead', true, live)
        if (n > 0) {
          this.counters.claimed += n
          this.opts.logger.info('claimed the unacked messages of a dead node: redelivered', {messages: n, queue: q})
        }
      }
    } finally {
      this.claimBusy = false
    }
  }

  /** Takes expired messages off the heads of queues with a TTL. */
  private async expire(): Promise<void> {
    if (!this.leaseValid()) return
    for (const q of this.defs.queues.values()) {
      if (q.ttlMs === undefined) continue
      const raws = (await runScript(this.redis, 'mqExpire', [this.keys.queue(q.name).stream], [Date.now(), this.consumerName, 1000])) as Raw[]
      for (const raw of raws) this.deadLetter(parseEntry(raw, q.name, this.consumerName), 'expired', 'expired')
    }
  }

  /** Queue depths and the node list, for stats (refreshed every second). */
  async refresh(): Promise<void> {
    const [now, flat] = (await runScript(this.redis, 'mqNodes', [this.keys.heartbeats, this.keys.nodes], [Math.max(60_000, this.opts.claimMs * 10)])) as [number, Buffer[]]
    const hb = new Map<string, number>()
    for (let i = 0; i + 1 < flat.length; i += 2) hb.set(flat[i].toString(), Number(flat[i + 1].toString()))
    const infos = hb.size > 0 ? await this.redis.hmget(this.keys.nodes, ...hb.keys()) : []
    this.nodes = [...hb].map(([consumer, ts], i) => {
      const info = infos[i] ? (JSON.parse(infos[i]!) as Record<string, unknown>) : {}
      const age = Number(now) - ts
      return {alive: age <= this.opts.claimMs, consumer, epoch: Number(info.epoch ?? 0), info, lastHeartbeatMsAgo: age, node: String(info.node ?? consumer), self: consumer === this.consumerName}
    })
    const depth = new Map<string, {ready: number; pending: number}>()
    await Promise.all(
      [...this.defs.queues.keys()].map(async (name) => {
        const k = this.keys.queue(name).stream
        const [len, pending] = await Promise.all([this.redis.xlen(k), this.redis.xpending(k, GROUP).catch(() => [0]) as Promise<unknown[]>])
        const p = Number(pending[0] ?? 0)
        depth.set(name, {pending: p, ready: Math.max(0, len - p)})
      }),
    )
    this.depth = depth
  }

  /** ---- statuses and stats ---- */

  async messageStatus(id: string): Promise<MessageStatusInfo | null> {
    let final: MessageStatusInfo | null = null
    for (const queue of this.defs.queues.keys()) {
      const k = this.keys.queue(queue)
      const [sid, done] = await Promise.all([this.redis.hget(k.ids, id), this.redis.hget(k.done, id)])
      if (sid) {
        const p = (await this.redis.xpending(k.stream, GROUP, sid, sid, 1)) as unknown[]
        if (p.length > 0) return {messageId: id, queue, status: 'delivered'}
        // as standalone: a dead letter waiting in its dead-letter queue says dead-lettered there
        const e = await this.xrange(k.stream, sid, sid)
        const dead = e.length > 0 && entryMessage(e[0][1]).headers['x-death-queue'] !== undefined
        return {messageId: id, queue, status: dead ? 'dead-lettered' : 'sent'}
      }
      // dead-lettered means it moved on: what happened in the dead-letter queue is the later news
      if (done !== null && (final === null || final.status === 'dead-lettered')) final = {messageId: id, queue, status: STATUS_NAMES[Number(done)]}
    }
    return final
  }

  private sampleRates(): void {
    const now = Date.now()
    const dt = (now - this.rateSample.t) / 1000
    if (dt <= 0) return
    this.rates = {
      ack: Math.round((this.totals.acknowledged - this.rateSample.acknowledged) / dt),
      deliver: Math.round((this.totals.delivered - this.rateSample.delivered) / dt),
      publish: Math.round((this.totals.published - this.rateSample.published) / dt),
    }
    this.rateSample = {acknowledged: this.totals.acknowledged, delivered: this.totals.delivered, published: this.totals.published, t: now}
  }

  /** the other live nodes' reports, this node's own counters fresh */
  private liveInfos(): Record<string, unknown>[] {
    const self = this.nodeId
    return [this.info(), ...latestPerNode(this.nodes).filter((n) => n.alive && !n.self && n.node !== self).map((n) => n.info)]
  }

  listQueues(): QueueStats[] {
    const infos = this.liveInfos()
    return [...this.defs.queues.values()]
      .map((q) => {
        const sum = (i: number) => infos.reduce((n, x) => n + Number((x.queues as Record<string, number[]> | undefined)?.[q.name]?.[i] ?? 0), 0)
        const d = this.depth.get(q.name) ?? {pending: 0, ready: 0}
        return {ackRate: 0, acked: sum(3), consumers: sum(0), deadLetter: q.deadLetter, deliverRate: 0, delivered: sum(2), durable: q.durable, maxLength: q.maxLength, messages: d.ready, name: q.name, publishRate: 0, published: sum(1), ttlMs: q.ttlMs, unacked: d.pending}
      })
      .sort((a, b) => a.name.localeCompare(b.name))
  }

  listExchanges(): {name: string; type: ExchangeType; durable: boolean; bindings: number}[] {
    return this.defs.listExchanges()
  }

  listBindings(): {exchange: string; queue: string; routingKey: string}[] {
    return this.defs.listBindings()
  }

  clusterStatus(): ClusterStatus {
    return {
      claimMs: this.opts.claimMs,
      durability: {mode: this.opts.durability, ...this.durabilityNote},
      name: this.opts.name,
      node: this.consumerName,
      nodes: latestPerNode(this.nodes).map((n) => (n.self ? {...n, info: this.info()} : n)),
      ...this.counters,
    }
  }

  stats(connections = this.sessions.size): BrokerStats {
    const infos = this.liveInfos()
    const queues = this.listQueues()
    const exchanges = this.listExchanges()
    const total = (key: keyof BrokerStats['totals']) => infos.reduce((n, x) => n + Number((x.totals as Record<string, number> | undefined)?.[key] ?? 0), 0)
    const rate = (key: string) => infos.reduce((n, x) => n + Number((x.rates as Record<string, number> | undefined)?.[key] ?? 0), 0)
    const statuses: Record<string, number> = {}
    const ready = queues.reduce((n, q) => n + q.messages, 0)
    const unacked = queues.reduce((n, q) => n + q.unacked, 0)
    if (ready > 0) statuses.sent = ready
    if (unacked > 0) statuses.delivered = unacked
    const conns = infos.reduce((n, x, i) => n + (i === 0 ? connections : Number(x.connections ?? 0)), 0)
    return {
      bindingCount: exchanges.reduce((n, e) => n + e.bindings, 0),
      cluster: this.clusterStatus(),
      connections: conns,
      exchangeCount: exchanges.length,
      exchanges,
      queues,
      rates: {ack: rate('ack'), deliver: rate('deliver'), publish: rate('publish')},
      statuses,
      totals: {acknowledged: total('acknowledged'), deadLettered: total('deadLettered'), delivered: total('delivered'), published: total('published'), unroutable: total('unroutable')},
      uptimeMs: Date.now() - this.started,
    }
  }

  private warn(what: string, error: unknown): void {
    const now = Date.now()
    if (now - this.lastWarn < 1000) return
    this.lastWarn = now
    this.opts.logger.warn(what, {error: errorText(error)})
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t)
    this.timers = []
  }

  /** Waits for the writes in flight (requeues of closed connections included), then leaves the cluster. */
  async close(): Promise<void> {
    this.stop()
    this.stopped = true
    for (const q of this.cqueues.values()) q.wake?.()
    // writes in flight (requeues of closed connections) get a bounded wait: Redis may be gone
    const settled = async () => {
      await Promise.allSettled([...this.commits.inflight])
      await sleep(50)
      await Promise.allSettled([...this.commits.inflight])
      // a clean leave: the others need not wait claim_ms for what this node still held
      await this.redis.hdel(this.keys.heartbeats, this.consumerName)
    }
    await Promise.race([settled().catch(() => {}), sleep(3000)])
    for (const r of this.readers) r.disconnect()
    this.sub.disconnect()
    this.redis.disconnect()
  }
}
