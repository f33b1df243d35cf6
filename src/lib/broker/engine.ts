/**
 * The broker's routing and delivery engine: exchanges, queues, bindings, consumers, acks and
 * message statuses. It is transport-free: the native server, the CipherMQ listener, the HTTP API
 * and tests all drive it through Sessions. Durable queues write through a DurableStore whose
 * group commit decides when a publish may be confirmed.
 */

import {MqError, NotFoundError as AbsentError, PermissionError, TempFailError, UsageError} from '../errors.js'
import {MessageIds} from '../wire/ids.js'
import {NO_HEADERS, isHeaderName} from '../wire/protocol.js'
import type {BrokerDefinitions, BrokerStats, ExchangeType, QueueStats} from '../wire/types.js'
import {DEFAULT_DEDUPE_MAX, DEFAULT_DEDUPE_WINDOW_MS, DedupeWindow} from './dedupe.js'
import type {Message} from './message.js'
import {MemoryWatermark} from './memory.js'
import {type MessageStatus, STATUS_CODE, STATUS_NAMES, StatusJournal} from './statuses.js'
import type {DurableStore, StoredMessage} from './store.js'

export type {BrokerStats, ExchangeType, MessageStatus, QueueStats} from '../wire/types.js'
export type {Message} from './message.js'

export const DEFAULT_EXCHANGE = 'default_exchange'
export const DEFAULT_QUEUE = 'default_queue'
export const DEFAULT_KEY = 'default_key'

const NAME_RE = /^[A-Za-z0-9_.:@-]{1,255}$/

export interface QueueOptions {
  durable?: boolean
  deadLetter?: string
  ttlMs?: number
  maxLength?: number
  /** the options are the queue's full settings (absent = default), as `mq queue declare` means them;
   * otherwise an absent option means "whatever exists" (CipherMQ, mq send) */
  exact?: boolean
  /** declared as another queue's dead-letter queue: it gets no dead-letter queue of its own */
  asDeadLetter?: boolean
}

/**
 * Nothing accepted is destroyed by default: every queue gets a dead-letter queue NAME.dlq, declared
 * with it, where rejected messages and those past broker.delivery_limit go. A dead-letter queue
 * (a name ending in .dlq, or one named as another queue's) has none: a message rejected there stays
 * in it (held by the rejecting connection until it closes), so there is no chain of .dlq.dlq queues.
 */
export function defaultDeadLetter(name: string): string | undefined {
  if (isDeadLetterName(name)) return undefined
  return `${name.slice(0, 251)}.dlq`
}

export function isDeadLetterName(name: string): boolean {
  return name.endsWith('.dlq')
}

export interface EngineOptions {
  deliveryLimit?: number
  maxUnacked?: number
  /** status changes remembered for STATUS queries (oldest forgotten first; default 300 000, about 100 000 messages) */
  statusCapacity?: number
  /** publish deduplication (see dedupe.ts): how long and how many unsettled ids are remembered */
  dedupeWindowMs?: number
  dedupeMax?: number
  /**
   * ready messages in a queue that has consumers beyond which publishers are paused (default 5 000):
   * consumers that fall behind slow publishers down instead of letting a backlog grow in memory
   */
  flowHigh?: number
  /**
   * the in-memory window of a durable queue (see Queue.paged): beyond this many messages or body
   * bytes, new messages of the queue live only in the store until consumers drain the window
   */
  windowMessages?: number
  windowBytes?: number
  /** hard limit of body bytes ready in a non-durable queue, and what happens beyond it */
  transientMaxBytes?: number
  transientOverflow?: TransientOverflow
  /** broker-wide memory high watermark in bytes (0 = none): above it publishers are paused */
  memoryHighWatermark?: number
  store?: DurableStore
  now?: () => number
}

/** reject-publish: the publish fails with E_QUEUE_FULL; drop-head: the oldest messages go to the dead-letter queue (or are dropped) */
export type TransientOverflow = 'reject-publish' | 'drop-head'

/** at most this many messages are read from the store per refill: a refill runs on the event loop */
const PAGE_CHUNK = 1024

/** a queue or exchange that does not exist: exit 66 like every other "not found" */
export class NotFoundError extends AbsentError {
  constructor(what: string, name: string) {
    super('E_NOT_FOUND', `${what} ${JSON.stringify(name)} does not exist`, {
      hint: what === 'queue' ? `Try this: mq queue declare ${name || 'NAME'}` : `Try this: mq exchange declare ${name || 'NAME'} --type direct`,
    })
  }
}

function checkName(kind: string, name: string): void {
  if (!NAME_RE.test(name)) {
    throw new UsageError('E_BAD_NAME', `${kind} name ${JSON.stringify(name)} is not valid: use 1-255 of A-Z a-z 0-9 _ . : @ -`, {hint: `Try this: a name like orders.eu-1`})
  }
}

/** Minimal array deque with O(1) shift/unshift at the head. */
class Deque<T> {
  private items: (T | undefined)[] = []
  private head = 0
  get length(): number {
    return this.items.length - this.head
  }
  push(v: T): void {
    this.items.push(v)
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined
    const v = this.items[this.head]
    this.items[this.head++] = undefined
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return v
  }
  peek(): T | undefined {
    return this.items[this.head]
  }
  unshift(v: T): void {
    if (this.head > 0) this.items[--this.head] = v
    else this.items.unshift(v)
  }
  clear(): T[] {
    const out = this.items.slice(this.head) as T[]
    this.items = []
    this.head = 0
    return out
  }
  *[Symbol.iterator](): Iterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i] as T
  }
}

/** The in-memory messages of a queue, with their body bytes. */
class MessageDeque extends Deque<Message> {
  bytes = 0
  override push(m: Message): void {
    this.bytes += m.body.length
    super.push(m)
  }
  override unshift(m: Message): void {
    this.bytes += m.body.length
    super.unshift(m)
  }
  override shift(): Message | undefined {
    const m = super.shift()
    if (m) this.bytes -= m.body.length
    return m
  }
  override clear(): Message[] {
    this.bytes = 0
    return super.clear()
  }
}

export class Queue {
  /** the head of the queue, in memory (for a durable queue with a backlog: its window) */
  readonly ready = new MessageDeque()
  /**
   * Paging (durable queues with a store): messages of the queue that are not in `ready` but only in
   * the store: the queue's tail, in seq order, read back by Engine.refill as consumers drain the
   * window. While paged > 0, new messages join the tail on disk (never the window), so order holds,
   * and every message of this queue in memory or unacked has seq <= pageCursor.
   */
  paged = 0
  pagedBytes = 0
  pageCursor = 0
  /** paged messages whose insert is not committed yet (the store cannot read them back): kept until it is */
  readonly uncommitted = new Deque<Message>()
  unacked = 0
  readonly consumers: Consumer[] = []
  rr = 0
  published = 0
  delivered = 0
  acked = 0
  dispatchScheduled = false
  /** publishers paused by flow control, woken when the backlog is worked down (see Engine.publish) */
  flowWaiters: (() => void)[] = []
  /** the dead-letter queue is the default NAME.dlq (not named by the operator): TTL and max-length drop instead of filling it */
  defaultDeadLetter = false
  constructor(
    readonly name: string,
    readonly durable: boolean,
    public deadLetter: string | undefined,
    readonly ttlMs: number | undefined,
    readonly maxLength: number | undefined,
  ) {}

  /** ready messages, in memory and paged out */
  get messages(): number {
    return this.ready.length + this.paged
  }
}

export class Exchange {
  /** direct: key -> queues; topic: pattern -> queues; fanout: '' -> queues */
  readonly bindings = new Map<string, Set<string>>()
  private topicCache = new Map<string, string[]>()
  constructor(
    readonly name: string,
    readonly type: ExchangeType,
    readonly durable: boolean,
  ) {}

  bind(queue: string, key: string): boolean {
    const k = this.type === 'fanout' ? '' : key
    let s = this.bindings.get(k)
    if (!s) this.bindings.set(k, (s = new Set()))
    const had = s.has(queue)
    s.add(queue)
    this.topicCache.clear()
    return !had
  }

  /** Removes one binding; false when there was none. */
  unbind(queue: string, key: string): boolean {
    const k = this.type === 'fanout' ? '' : key
    const s = this.bindings.get(k)
    if (!s || !s.delete(queue)) return false
    if (s.size === 0) this.bindings.delete(k)
    this.topicCache.clear()
    return true
  }

  unbindQueue(queue: string): void {
    for (const [k, s] of this.bindings) {
      s.delete(queue)
      if (s.size === 0) this.bindings.delete(k)
    }
    this.topicCache.clear()
  }

  bindingCount(): number {
    let n = 0
    for (const s of this.bindings.values()) n += s.size
    return n
  }

  route(key: string): string[] {
    if (this.type === 'fanout') return [...(this.bindings.get('') ?? [])]
    if (this.type === 'direct') return [...(this.bindings.get(key) ?? [])]
    const cached = this.topicCache.get(key)
    if (cached) return cached
    const out = new Set<string>()
    const words = key.split('.')
    for (const [pattern, queues] of this.bindings) {
      if (topicMatch(pattern.split('.'), 0, words, 0)) for (const q of queues) out.add(q)
    }
    const res = [...out]
    if (this.topicCache.size > 10_000) this.topicCache.clear()
    this.topicCache.set(key, res)
    return res
  }
}

/** AMQP-style topic match: `*` is exactly one word, `#` zero or more words. */
export function topicMatch(p: string[], pi: number, w: string[], wi: number): boolean {
  while (pi < p.length) {
    const t = p[pi]
    if (t === '#') {
      if (pi === p.length - 1) return true
      for (let k = wi; k <= w.length; k++) if (topicMatch(p, pi + 1, w, k)) return true
      return false
    }
    if (wi >= w.length) return false
    if (t !== '*' && t !== w[wi]) return false
    pi++
    wi++
  }
  return wi === w.length
}

export interface Consumer {
  tag: string
  queue: Queue
  session: Session
  prefetch: number
  noAck: boolean
  inflight: number
}

/** What round-robin dispatch looks at in a consumer (the standalone and the cluster engine share it). */
export interface Dispatchable {
  session: Session
  prefetch: number
  noAck: boolean
  inflight: number
}

/**
 * The next consumer of `q` in round-robin order that can take a message now: its connection is open
 * and writable, and (unless it is no-ack) it is under its prefetch and its session under maxUnacked.
 * Advances q.rr past the one chosen.
 */
export function nextConsumer<C extends Dispatchable>(q: {consumers: C[]; rr: number}, maxUnacked: number): C | undefined {
  const n = q.consumers.length
  for (let i = 0; i < n; i++) {
    const c = q.consumers[(q.rr + i) % n]
    if (c.session.closed || !c.session.sink.writable()) continue
    if (!c.noAck && (c.inflight >= c.prefetch || c.session.unacked.size >= maxUnacked)) continue
    q.rr = (q.rr + i + 1) % n
    return c
  }
  return undefined
}

interface Unacked {
  queue: Queue
  msg: Message
  consumer?: Consumer
}

export interface DeliveryOut {
  deliveryTag: number
  consumerTag: string
  queue: string
  msg: Message
}

/** What a transport gives the engine for one client connection. */
export interface SessionSink {
  deliver(d: DeliveryOut): void
  /** false while the transport's output buffer is full: the engine stops pushing */
  writable(): boolean
  /** the broker cancelled a consumer (its queue was deleted) */
  cancelled?(consumerTag: string): void
}

export interface Permissions {
  canPublish(exchange: string): boolean
  canConsume(queue: string): boolean
  admin: boolean
  /** may list queues, read statuses, stats and metrics */
  monitor: boolean
  /** the refusal of a consume, naming the rule to add (default: a generic E_FORBIDDEN) */
  forbidConsume?(queue: string): MqError
}

export const ALLOW_ALL: Permissions = {admin: true, canConsume: () => true, canPublish: () => true, monitor: true}

function consumeRefused(perms: Permissions, queue: string): MqError {
  return perms.forbidConsume?.(queue) ?? new PermissionError('E_FORBIDDEN', `not allowed to consume from queue ${JSON.stringify(queue)}`, {hint: 'Try this: ask an admin to add it to broker.permissions[].consume'})
}

export class Session {
  nextTag = 1
  readonly unacked = new Map<number, Unacked>()
  readonly consumers = new Map<string, Consumer>()
  closed = false
  constructor(
    readonly engine: Engine,
    readonly identity: string,
    readonly sink: SessionSink,
    readonly perms: Permissions,
  ) {}
}

export interface PublishResult {
  messageId: string
  queues: string[]
  /** true when a durable queue took the message: confirm after the next commit */
  durable: boolean
  /** a deduplicated publish whose id was already published: nothing was stored this time */
  duplicate?: boolean
  /**
   * set when a target queue with consumers has a backlog of flowHigh ready messages: the publisher
   * should stop reading until Engine.whenFlowing calls back (credit flow, as RabbitMQ's "flow" state)
   */
  flow?: string
}

export interface PublishOptions {
  messageId?: string
  headers?: Record<string, string>
  /** with messageId: an id already published (and not settled, see DedupeWindow) is not stored again */
  dedupe?: boolean
}

export class Engine {
  readonly exchanges = new Map<string, Exchange>()
  readonly queues = new Map<string, Queue>()
  readonly sessions = new Set<Session>()
  /** the latest status per message id, for STATUS (bounded: the most recent statusCapacity changes) */
  private readonly statuses: StatusJournal
  /** status changes since start, by status code (stats: terminal statuses) */
  private readonly statusEvents = new Float64Array(STATUS_NAMES.length)
  private readonly ids = new MessageIds()
  private seq = 1
  private ctagSeq = 1
  private readonly started: number
  readonly deliveryLimit: number
  readonly maxUnacked: number
  readonly flowHigh: number
  readonly windowMessages: number
  readonly windowBytes: number
  readonly transientMaxBytes: number
  readonly transientOverflow: TransientOverflow
  readonly memory: MemoryWatermark
  readonly store?: DurableStore
  readonly dedupe: DedupeWindow
  private readonly now: () => number
  totals = {published: 0, delivered: 0, acknowledged: 0, deadLettered: 0, unroutable: 0}
  private rateSample = {t: 0, published: 0, delivered: 0, acknowledged: 0, perQueue: new Map<string, [number, number, number]>()}
  private rates = {publish: 0, deliver: 0, ack: 0, perQueue: new Map<string, [number, number, number]>()}
  private sweepTimer?: NodeJS.Timeout
  private memoryTimer?: NodeJS.Timeout

  constructor(opts: EngineOptions = {}) {
    this.deliveryLimit = opts.deliveryLimit ?? 20
    this.maxUnacked = opts.maxUnacked ?? 10_000
    this.statuses = new StatusJournal(opts.statusCapacity ?? 300_000)
    this.flowHigh = Math.max(2, opts.flowHigh ?? 5_000)
    this.windowMessages = Math.max(1, opts.windowMessages ?? 2_500)
    this.windowBytes = Math.max(1, opts.windowBytes ?? 16 * 1024 * 1024)
    this.transientMaxBytes = opts.transientMaxBytes ?? 64 * 1024 * 1024
    this.transientOverflow = opts.transientOverflow ?? 'reject-publish'
    this.memory = new MemoryWatermark(opts.memoryHighWatermark ?? 0)
    this.store = opts.store
    this.now = opts.now ?? Date.now
    this.started = this.now()
    this.rateSample.t = this.started
    this.exchanges.set('', new Exchange('', 'direct', true))
    this.dedupe = new DedupeWindow({log: this.store, max: opts.dedupeMax ?? DEFAULT_DEDUPE_MAX, now: this.now, windowMs: opts.dedupeWindowMs ?? DEFAULT_DEDUPE_WINDOW_MS})
    if (this.store) {
      this.restore(this.store)
      this.addMissingDeadLetters()
      this.dedupe.restore()
    }
    if (!this.exchanges.has(DEFAULT_EXCHANGE)) {
      this.declareExchange(DEFAULT_EXCHANGE, 'direct', {durable: true})
      this.declareQueue(DEFAULT_QUEUE, {durable: true})
      this.bind(DEFAULT_QUEUE, DEFAULT_EXCHANGE, DEFAULT_KEY)
    }
  }

  /** True when the queues hold at least `messages` ready messages, in memory or paged out (a backlog). */
  holdsBacklog(messages: number): boolean {
    let n = 0
    for (const q of this.queues.values()) {
      n += q.messages
      if (n >= messages) return true
    }
    return false
  }

  /** Starts the TTL sweep and rate sampling timers (servers; unit tests may skip this). */
  start(): void {
    this.sweepTimer = setInterval(() => {
      this.sampleRates()
      for (const q of this.queues.values()) {
        if (q.ttlMs !== undefined) this.expireHead(q)
        if (q.uncommitted.length > 0) this.trimUncommitted(q)
      }
    }, 1000)
    this.sweepTimer.unref()
    // a few times a second, not per message: process.memoryUsage.rss() is a syscall
    this.memoryTimer = setInterval(() => this.memory.check(), 250)
    this.memoryTimer.unref()
    this.memory.check()
  }

  stop(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer)
    if (this.memoryTimer) clearInterval(this.memoryTimer)
  }

  private restore(store: DurableStore): void {
    const defs = store.loadDefinitions()
    for (const e of defs.exchanges) this.exchanges.set(e.name, new Exchange(e.name, e.type, true))
    for (const q of defs.queues) this.queues.set(q.name, new Queue(q.name, true, q.deadLetter ?? undefined, q.ttlMs ?? undefined, q.maxLength ?? undefined))
    for (const b of defs.bindings) this.exchanges.get(b.exchange)?.bind(b.queue, b.key)
    // definitions and the per-queue index only: every stored message starts paged out and is read
    // back by refill when a consumer (or a get) asks, so a restart costs a row per queue, not per message
    for (const [name, i] of store.queueIndex()) {
      const q = this.queues.get(name)
      if (!q) continue
      q.paged = i.messages
      q.pagedBytes = i.bytes
      q.pageCursor = 0
    }
    this.seq = store.maxSeq() + 1
  }

  // ---- definitions -------------------------------------------------------------------------

  declareExchange(name: string, type: ExchangeType, opts: {durable?: boolean} = {}): Exchange {
    if (name === '') throw new UsageError('E_RESERVED', 'the default exchange "" cannot be redeclared', {hint: 'Try this: pick another exchange name'})
    checkName('exchange', name)
    if (!['direct', 'fanout', 'topic'].includes(type)) throw new UsageError('E_BAD_TYPE', `exchange type ${JSON.stringify(type)} is not one of direct, fanout, topic`, {hint: 'Try this: --type topic'})
    const durable = opts.durable ?? true
    const existing = this.exchanges.get(name)
    if (existing) {
      if (existing.type !== type) {
        throw new MqError('E_EXISTS', `exchange ${JSON.stringify(name)} already exists with type ${existing.type}, not ${type}`, {hint: `Try this: use --type ${existing.type} or another name`})
      }
      return existing
    }
    const ex = new Exchange(name, type, durable)
    this.exchanges.set(name, ex)
    if (durable) this.store?.saveExchange(name, type)
    return ex
  }

  declareQueue(name: string, opts: QueueOptions = {}): Queue {
    checkName('queue', name)
    // a queue named as some queue's dead-letter destination gets none of its own (no .dlq.dlq chains)
    const dflt = opts.asDeadLetter || this.isDeadLetterTarget(name) ? undefined : defaultDeadLetter(name)
    const existing = this.queues.get(name)
    if (existing) {
      // idempotent, but a redeclaration must not silently differ from what exists (RabbitMQ's PRECONDITION_FAILED)
      const show = (v: unknown) => (v === undefined ? 'none' : String(v))
      const diff: string[] = []
      const check = (label: string, want: unknown, have: unknown, dflt: unknown) => {
        const w = want === undefined && opts.exact ? dflt : want
        if (w !== undefined && w !== have) diff.push(`${label}: existing ${show(have)}, requested ${show(w)}`)
      }
      check('durable', opts.durable, existing.durable, false)
      check('dead-letter', opts.deadLetter, existing.deadLetter, dflt)
      if (opts.deadLetter === undefined && opts.exact && dflt !== undefined && diff.length > 0 && diff.at(-1)!.startsWith('dead-letter:')) diff[diff.length - 1] += ' (the default)'
      check('ttl', opts.ttlMs, existing.ttlMs, undefined)
      check('max-length', opts.maxLength, existing.maxLength, undefined)
      if (opts.exact) {
        // an exact "none" must match an existing "none" too
        if (opts.deadLetter === undefined && dflt === undefined && existing.deadLetter !== undefined) diff.push(`dead-letter: existing ${existing.deadLetter}, requested none`)
        if (opts.ttlMs === undefined && existing.ttlMs !== undefined) diff.push(`ttl: existing ${existing.ttlMs}, requested none`)
        if (opts.maxLength === undefined && existing.maxLength !== undefined) diff.push(`max-length: existing ${existing.maxLength}, requested none`)
      }
      if (diff.length > 0) {
        const flags = [existing.durable ? '' : '--transient', existing.deadLetter ? `--dead-letter ${existing.deadLetter}` : '', existing.ttlMs ? `--ttl ${existing.ttlMs}ms` : '', existing.maxLength ? `--max-length ${existing.maxLength}` : ''].filter(Boolean).join(' ')
        throw new MqError('E_QUEUE_MISMATCH', `queue ${JSON.stringify(name)} already exists with different settings (${diff.join('; ')})`, {
          details: {queue: name, existing: {durable: existing.durable, deadLetter: existing.deadLetter ?? null, ttlMs: existing.ttlMs ?? null, maxLength: existing.maxLength ?? null}},
          hint: `Try this: declare it with the same settings (mq queue declare ${name}${flags ? ' ' + flags : ''}), or delete it first (mq queue delete ${name}) and declare it again`,
        })
      }
      return existing
    }
    const deadLetter = opts.deadLetter ?? dflt
    if (deadLetter !== undefined) {
      checkName('dead-letter queue', deadLetter)
      if (deadLetter === name) throw new UsageError('E_BAD_DEAD_LETTER', 'a queue cannot be its own dead-letter queue', {hint: `Try this: --dead-letter ${name}.dlq`})
    }
    if (opts.ttlMs !== undefined && (!Number.isInteger(opts.ttlMs) || opts.ttlMs < 1)) throw new UsageError('E_BAD_TTL', `ttl ${opts.ttlMs} must be a positive integer (ms)`, {hint: 'Try this: --ttl 60000'})
    if (opts.maxLength !== undefined && (!Number.isInteger(opts.maxLength) || opts.maxLength < 1)) throw new UsageError('E_BAD_MAX_LENGTH', `max length ${opts.maxLength} must be a positive integer`, {hint: 'Try this: --max-length 10000'})
    // the dead-letter queue first (after the checks above, so a refused declaration creates nothing)
    if (deadLetter !== undefined && !this.queues.has(deadLetter)) this.declareQueue(deadLetter, {asDeadLetter: true, durable: opts.durable})
    const q = new Queue(name, opts.durable ?? false, deadLetter, opts.ttlMs, opts.maxLength)
    q.defaultDeadLetter = opts.deadLetter === undefined && deadLetter !== undefined
    this.queues.set(name, q)
    // a default dead-letter queue is stored as none (NULL) and worked out again on restore, like those of queues from before defaults
    if (q.durable) this.store?.saveQueue({name, deadLetter: q.defaultDeadLetter ? null : (q.deadLetter ?? null), ttlMs: q.ttlMs ?? null, maxLength: q.maxLength ?? null})
    return q
  }

  /** True when some queue names NAME as its dead-letter queue. */
  private isDeadLetterTarget(name: string): boolean {
    for (const q of this.queues.values()) if (q.deadLetter === name) return true
    return false
  }

  /**
   * On restore: durable queues stored without a dead-letter queue (declared with the default, or
   * before every queue had one: the upgrade path) get the default one, so a reject is kept, not dropped.
   */
  private addMissingDeadLetters(): void {
    const targets = new Set([...this.queues.values()].map((q) => q.deadLetter).filter((d) => d !== undefined))
    for (const q of [...this.queues.values()]) {
      if (q.deadLetter !== undefined || targets.has(q.name)) continue
      const dl = defaultDeadLetter(q.name)
      if (dl === undefined) continue
      if (!this.queues.has(dl)) this.declareQueue(dl, {asDeadLetter: true, durable: q.durable})
      q.deadLetter = dl
      q.defaultDeadLetter = true
    }
  }

  bind(queue: string, exchange: string, key: string): void {
    const q = this.queues.get(queue)
    if (!q) throw new NotFoundError('queue', queue)
    if (exchange === '') throw new UsageError('E_RESERVED', 'the default exchange "" routes by queue name and takes no bindings', {hint: 'Try this: bind to a named exchange'})
    const ex = this.exchanges.get(exchange)
    if (!ex) throw new NotFoundError('exchange', exchange)
    if (ex.type !== 'fanout' && key.length > 255) throw new UsageError('E_BAD_KEY', 'routing key longer than 255 characters', {hint: 'Try this: a shorter key'})
    if (ex.bind(queue, key) && ex.durable && q.durable) this.store?.saveBinding(exchange, queue, ex.type === 'fanout' ? '' : key)
  }

  /** Removes one binding; E_NOT_FOUND when the queue, the exchange or the binding does not exist. */
  unbind(queue: string, exchange: string, key: string): void {
    const q = this.queues.get(queue)
    if (!q) throw new NotFoundError('queue', queue)
    if (exchange === '') throw new UsageError('E_RESERVED', 'the default exchange "" routes by queue name and has no bindings to remove', {hint: 'Try this: unbind from a named exchange'})
    const ex = this.exchanges.get(exchange)
    if (!ex) throw new NotFoundError('exchange', exchange)
    if (!ex.unbind(queue, key)) {
      const keys = this.listBindings().filter((b) => b.exchange === exchange && b.queue === queue).map((b) => JSON.stringify(b.routingKey))
      throw new AbsentError('E_NOT_FOUND', `queue ${JSON.stringify(queue)} is not bound to exchange ${JSON.stringify(exchange)} with key ${JSON.stringify(ex.type === 'fanout' ? '' : key)}`, {
        hint: keys.length > 0 ? `Try this: --key ${keys[0]} (its bindings to ${exchange}: ${keys.join(', ')})` : `Try this: mq exchange list (it has no binding of ${queue} to ${exchange})`,
      })
    }
    if (ex.durable && q.durable) this.store?.deleteBinding(exchange, queue, ex.type === 'fanout' ? '' : key)
  }

  /**
   * Deletes an exchange and its bindings (the queues stay). ifUnused: refused while it has bindings,
   * as RabbitMQ's if-unused (our exchanges have no publishers to count, bindings are their use).
   */
  deleteExchange(name: string, opts: {ifUnused?: boolean} = {}): number {
    if (name === '') throw new UsageError('E_RESERVED', 'the default exchange "" is built in and cannot be deleted', {hint: 'Try this: delete a named exchange'})
    const ex = this.exchanges.get(name)
    if (!ex) throw new NotFoundError('exchange', name)
    if (name === DEFAULT_EXCHANGE) throw new UsageError('E_RESERVED', `${DEFAULT_EXCHANGE} is built in and cannot be deleted`, {hint: `Try this: mq queue unbind ${DEFAULT_QUEUE} ${DEFAULT_EXCHANGE} --key ${DEFAULT_KEY}`})
    const bindings = ex.bindingCount()
    if (opts.ifUnused && bindings > 0) {
      throw new MqError('E_IN_USE', `exchange ${JSON.stringify(name)} still has ${bindings} binding${bindings === 1 ? '' : 's'}: not deleted (--if-unused)`, {
        details: {bindings, exchange: name},
        hint: `Try this: mq exchange list to see them, mq queue unbind QUEUE ${name} --key KEY, or drop --if-unused`,
      })
    }
    this.exchanges.delete(name)
    if (ex.durable) this.store?.deleteExchange(name)
    return bindings
  }

  /**
   * Up to `count` ready messages from the head of a queue, in order, left exactly as they are: not
   * taken, not counted as delivered, not flagged redelivered, statuses unchanged. Messages held
   * unacked by consumers are not ready and not shown; expired ones are skipped (the sweep takes them).
   */
  peek(queue: string, count: number): {messages: Message[]; ready: number} {
    const q = this.queues.get(queue)
    if (!q) throw new NotFoundError('queue', queue)
    // a durable queue's window may be shorter than asked while its tail is on disk: read it in first
    if (q.ready.length < count && q.paged > 0) this.refill(q)
    const now = this.now()
    const out: Message[] = []
    for (const m of q.ready) {
      if (out.length >= count) break
      if (m.expiresAt && m.expiresAt <= now) continue
      out.push(m)
    }
    return {messages: out, ready: q.messages}
  }

  /**
   * The definitions (exchanges, queues with their settings, bindings), sorted, as `mq definitions export`
   * writes them. A queue's dead-letter queue is listed only when the operator named it: the default
   * NAME.dlq is worked out again on import, with its default behaviour (TTL and max-length drop).
   */
  definitions(): BrokerDefinitions {
    const byName = <T extends {name: string}>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
    const exchanges = [...this.exchanges.values()].filter((e) => e.name !== '').map((e) => ({durable: e.durable, name: e.name, type: e.type})).sort(byName)
    const queues = [...this.queues.values()].map((q) => ({deadLetter: q.defaultDeadLetter ? null : (q.deadLetter ?? null), durable: q.durable, maxLength: q.maxLength ?? null, name: q.name, ttlMs: q.ttlMs ?? null})).sort(byName)
    const key = (b: {exchange: string; queue: string; routingKey: string}) => `${b.exchange}\u0000${b.queue}\u0000${b.routingKey}`
    const bindings = this.listBindings().sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0))
    return {bindings, exchanges, queues}
  }

  deleteQueue(name: string): number {
    const q = this.queues.get(name)
    if (!q) throw new NotFoundError('queue', name)
    if (name === DEFAULT_QUEUE) throw new UsageError('E_RESERVED', `${DEFAULT_QUEUE} is built in and cannot be deleted`, {hint: `Try this: mq queue purge ${DEFAULT_QUEUE}`})
    for (const c of [...q.consumers]) {
      this.cancel(c.session, c.tag)
      c.session.sink.cancelled?.(c.tag)
    }
    for (const ex of this.exchanges.values()) ex.unbindQueue(name)
    const n = q.messages
    for (const m of q.ready.clear()) this.setStatus(m, 'purged', name)
    for (const m of q.uncommitted.clear()) this.setStatus(m, 'purged', name)
    q.paged = q.pagedBytes = 0
    // messages still unacked by sessions are dropped when acked/returned (queue no longer registered)
    this.queues.delete(name)
    if (q.durable) this.store?.deleteQueue(name)
    this.releaseFlow(q, true)
    return n
  }

  purgeQueue(name: string): number {
    const q = this.queues.get(name)
    if (!q) throw new NotFoundError('queue', name)
    const msgs = q.ready.clear()
    for (const m of msgs) {
      this.setStatus(m, 'purged', name)
      if (q.durable) this.store?.deleteMessage(m.seq, m.body.length)
    }
    const n = msgs.length + q.paged
    if (q.paged > 0) {
      // the paged-out tail goes in the writer, in order after the inserts still queued; the statuses
      // of messages only on disk are not rewritten (that would read them all)
      for (const m of q.uncommitted.clear()) this.setStatus(m, 'purged', name)
      this.store?.purgeAfter(q.name, q.pageCursor)
      q.paged = q.pagedBytes = 0
    }
    this.releaseFlow(q)
    return n
  }

  // ---- sessions ----------------------------------------------------------------------------

  openSession(identity: string, sink: SessionSink, perms: Permissions = ALLOW_ALL): Session {
    const s = new Session(this, identity, sink, perms)
    this.sessions.add(s)
    return s
  }

  /** Connection gone: cancel its consumers and return every unacked message to its queue. */
  closeSession(s: Session): void {
    if (s.closed) return
    s.closed = true
    this.sessions.delete(s)
    for (const tag of [...s.consumers.keys()]) this.cancel(s, tag)
    const entries = [...s.unacked.values()].reverse() // unshift in reverse keeps the original order
    s.unacked.clear()
    for (const u of entries) {
      u.queue.unacked--
      this.requeue(u.queue, u.msg)
    }
  }

  // ---- publish -----------------------------------------------------------------------------

  publish(exchange: string, routingKey: string, body: Buffer, opts: PublishOptions = {}, perms: Permissions = ALLOW_ALL): PublishResult {
    if (!perms.canPublish(exchange)) throw new PermissionError('E_FORBIDDEN', `not allowed to publish to exchange ${JSON.stringify(exchange)}`, {hint: 'Try this: ask an admin to add it to broker.permissions[].publish'})
    if (opts.dedupe && opts.messageId !== undefined) {
      // durable as the first copy was: the answer waits for that copy's commit if it is still pending
      const seen = this.dedupe.get(opts.messageId)
      if (seen) return {duplicate: true, durable: seen.durable, messageId: opts.messageId, queues: seen.queues}
    }
    const targets = this.route(exchange, routingKey)
    if (opts.messageId !== undefined && (opts.messageId.length === 0 || opts.messageId.length > 200)) {
      throw new UsageError('E_BAD_MESSAGE_ID', 'message id must be 1-200 characters', {hint: 'Try this: omit it to get a UUID'})
    }
    const messageId = opts.messageId ?? this.newId()
    const timestamp = this.now()
    const headers = opts.headers ?? {}
    // a name a DELIVER frame cannot carry would throw later, inside dispatch, and kill the broker
    for (const k in headers) if (!isHeaderName(k)) throw new UsageError('E_BAD_HEADER', `header name ${JSON.stringify(k.slice(0, 40))} is not allowed (1-128 letters, digits, _ . : -)`, {hint: 'Try this: rename the header'})
    this.checkRoom(targets, body.length)
    let durable = false
    let flow: string | undefined
    // the id's hashes, taken by the first queue's copy and shared by the others
    let h1 = 0
    let h2 = 0
    for (const qn of targets) {
      const q = this.queues.get(qn)!
      const msg: Message = {seq: this.seq++, messageId, exchange, routingKey, body, headers, timestamp, deliveryCount: 0, redelivered: false, expiresAt: q.ttlMs ? timestamp + q.ttlMs : 0, idHash1: h1, idHash2: h2}
      this.setStatus(msg, 'sent', q.name)
      h1 = msg.idHash1
      h2 = msg.idHash2
      if (this.enqueue(q, msg)) durable = true
      // a queue without consumers is a buffer and takes what comes; one with consumers that lag pushes back
      if (this.lagging(q)) flow = qn
    }
    this.totals.published++
    if (headers !== NO_HEADERS && headers['x-redriven-from'] !== undefined) this.noteRedriven(messageId, headers['x-redriven-from'])
    // remembered in the same group commit as the message rows just queued
    if (opts.dedupe && opts.messageId !== undefined) this.dedupe.add(messageId, targets, durable)
    return {messageId, queues: targets, durable, flow}
  }

  /**
   * A PUBLISH_BATCH: many bodies to one exchange and routing key, routed and permission-checked once.
   * Everything is checked before the first message is queued, so a batch is taken whole or not at all.
   * `headers` are every message's: one object shared by all of them (nothing changes a message's headers in place).
   */
  publishMany(exchange: string, routingKey: string, bodies: Buffer[], ids: (string | undefined)[], perms: Permissions = ALLOW_ALL, headers: Record<string, string> = NO_HEADERS as Record<string, string>): PublishResult {
    if (!perms.canPublish(exchange)) throw new PermissionError('E_FORBIDDEN', `not allowed to publish to exchange ${JSON.stringify(exchange)}`, {hint: 'Try this: ask an admin to add it to broker.permissions[].publish'})
    const targets = this.route(exchange, routingKey)
    for (const id of ids) {
      if (id !== undefined && (id.length === 0 || id.length > 200)) throw new UsageError('E_BAD_MESSAGE_ID', 'message id must be 1-200 characters', {hint: 'Try this: omit it to get a UUID'})
    }
    // as publish(): a name a DELIVER frame cannot carry would throw later, inside dispatch
    for (const k in headers) if (!isHeaderName(k)) throw new UsageError('E_BAD_HEADER', `header name ${JSON.stringify(k.slice(0, 40))} is not allowed (1-128 letters, digits, _ . : -)`, {hint: 'Try this: rename the header'})
    const redrivenFrom = headers === NO_HEADERS ? undefined : headers['x-redriven-from']
    let total = 0
    for (const b of bodies) total += b.length
    this.checkRoom(targets, total)
    const timestamp = this.now()
    let durable = false
    let flow: string | undefined
    let lastId = ''
    for (let i = 0; i < bodies.length; i++) {
      const messageId = ids[i] ?? this.newId()
      lastId = messageId
      let h1 = 0
      let h2 = 0
      for (const qn of targets) {
        const q = this.queues.get(qn)!
        const msg: Message = {seq: this.seq++, messageId, exchange, routingKey, body: bodies[i], headers, timestamp, deliveryCount: 0, redelivered: false, expiresAt: q.ttlMs ? timestamp + q.ttlMs : 0, idHash1: h1, idHash2: h2}
        this.setStatus(msg, 'sent', q.name)
        h1 = msg.idHash1
        h2 = msg.idHash2
        if (this.enqueue(q, msg)) durable = true
        if (this.lagging(q)) flow = qn
      }
      if (redrivenFrom !== undefined) this.noteRedriven(messageId, redrivenFrom)
    }
    this.totals.published += bodies.length
    return {messageId: lastId, queues: targets, durable, flow}
  }

  /** The queues a publish to exchange/routingKey reaches; unroutable is an error, not a silent drop. */
  private route(exchange: string, routingKey: string): string[] {
    let targets: string[]
    if (exchange === '') {
      targets = this.queues.has(routingKey) ? [routingKey] : []
    } else {
      const ex = this.exchanges.get(exchange)
      if (!ex) throw new NotFoundError('exchange', exchange)
      targets = ex.route(routingKey)
    }
    if (targets.length === 0) {
      this.totals.unroutable++
      // the default exchange routes by queue name: the fix there is a queue, not a binding
      throw new MqError('E_UNROUTABLE', exchange === '' ? `no queue named ${JSON.stringify(routingKey)}: the message was not accepted` : `no queue is bound to exchange ${JSON.stringify(exchange)} with routing key ${JSON.stringify(routingKey)}: the message was not accepted`, {
        hint: exchange === '' ? `Try this: mq queue declare ${routingKey || 'NAME'}` : `Try this: mq queue bind QUEUE --exchange ${exchange} --routing-key ${routingKey || '""'}`,
      })
    }
    return targets
  }

  /**
   * `mq queue redrive` republishes a dead letter (same id, header x-redriven-from = its dead-letter
   * queue) and only then acks it there: that ack must not make `STATUS` say "acknowledged" for a
   * message now waiting in the queue it was redriven to. Bounded: an id whose ack never comes (a
   * redrive that died) is forgotten oldest first.
   */
  private readonly redriven = new Map<string, string>()

  private noteRedriven(messageId: string, from: string): void {
    if (this.redriven.size >= 10_000) this.redriven.delete(this.redriven.keys().next().value!)
    this.redriven.set(messageId, from)
  }

  /** The publisher recorded a deduplicated publish itself: its id need not be remembered any more. */
  settlePublished(messageId: string): boolean {
    return this.dedupe.settle(messageId)
  }

  /** see MessageIds */
  private newId(): string {
    return this.ids.next()
  }

  /**
   * reject-publish: a non-durable queue at its byte limit refuses the whole publish (checked for
   * every target before anything is queued, so a publish is taken whole or not at all).
   */
  private checkRoom(targets: string[], bytes: number): void {
    if (this.transientOverflow !== 'reject-publish') return
    for (const qn of targets) {
      const q = this.queues.get(qn)!
      if (q.durable || q.ready.bytes + bytes <= this.transientMaxBytes) continue
      throw new TempFailError('E_QUEUE_FULL', `queue ${JSON.stringify(qn)} is full: ${q.ready.bytes} bytes ready, limit ${this.transientMaxBytes} (broker.transient_queue_max_bytes); the message was not accepted`, {
        details: {limit: this.transientMaxBytes, queue: qn, ready_bytes: q.ready.bytes},
        hint: `Try this: consume from ${qn}, retry later, or declare it --durable (durable queues page to disk instead)`,
      })
    }
  }

  /** Appends to a queue (persisting it for durable queues); returns true if it was a durable write. */
  private enqueue(q: Queue, msg: Message): boolean {
    if (q.maxLength !== undefined) {
      while (q.messages >= q.maxLength) {
        const old = this.takeHead(q)
        if (!old) break
        this.deadLetter(q, old, 'maxlen', 'dropped')
      }
    }
    q.published++
    const store = q.durable ? this.store : undefined
    if (!store) {
      // drop-head: the oldest ready messages make room (into the dead-letter queue, or dropped)
      if (!q.durable && this.transientOverflow === 'drop-head') {
        while (q.ready.length > 0 && q.ready.bytes + msg.body.length > this.transientMaxBytes) this.deadLetter(q, q.ready.shift()!, 'overflow', 'dropped')
      }
      q.ready.push(msg)
      this.schedule(q)
      return false
    }
    store.insertMessage(q.name, msg)
    // Hot path (issue 17): while the window has room and nothing is paged out, a message stays in
    // memory and is delivered from there, exactly as without paging: no disk read. Only a backlog
    // beyond the window goes to the tail on disk.
    if (q.paged === 0 && q.ready.length < this.windowMessages && q.ready.bytes < this.windowBytes) {
      q.ready.push(msg)
      this.schedule(q)
      return true
    }
    if (q.paged === 0) q.pageCursor = msg.seq - 1
    q.paged++
    q.pagedBytes += msg.body.length
    q.uncommitted.push(msg)
    if (q.uncommitted.length > 64) this.trimUncommitted(q)
    this.schedule(q)
    return true
  }

  /** Forgets paged messages whose insert is committed: the store reads them back from now on. */
  private trimUncommitted(q: Queue): void {
    const committed = this.store?.committedSeq ?? 0
    while (q.uncommitted.length > 0 && q.uncommitted.peek()!.seq <= committed) q.uncommitted.shift()
  }

  /**
   * Reads the next paged messages of a queue back into its window, in order: committed ones from the
   * store, then (once those run out) the uncommitted ones kept in memory. At most PAGE_CHUNK messages
   * per call, and up to the window's byte limit.
   *
   * Hot-path notes (issue 17): the read is synchronous on the event loop (better-sqlite3), from half a
   * window on, so a draining consumer finds messages in memory; a 1024-message chunk of 1 KiB bodies
   * costs a few ms (one range scan, one AES-GCM open per ~1 MiB group). Moving it to a reader thread
   * (prefetching the next chunk while the window drains) is the next step if drains must go faster.
   * Publishes to a queue with a backlog cost one more branch and a push to `uncommitted` (no copy).
   */
  private refill(q: Queue): void {
    const store = this.store
    if (q.paged === 0 || !store) return
    this.trimUncommitted(q)
    let room = Math.max(1, this.windowMessages - q.ready.length)
    const onDisk = q.paged - q.uncommitted.length
    if (onDisk > 0) {
      const r = store.readQueue(q.name, q.pageCursor, store.committedSeq, Math.min(room, onDisk, PAGE_CHUNK), Math.max(1, this.windowBytes - q.ready.bytes))
      for (const m of r.messages) {
        q.ready.push({body: m.body, deliveryCount: m.deliveryCount, exchange: m.exchange, expiresAt: m.expiresAt, headers: m.headers, messageId: m.messageId, redelivered: m.deliveryCount > 0, routingKey: m.routingKey, seq: m.seq, timestamp: m.timestamp, idHash1: 0, idHash2: 0})
        q.pagedBytes -= m.body.length
      }
      q.paged -= r.messages.length + r.skipped
      q.pagedBytes -= r.skippedBytes
      if (r.lastSeq > q.pageCursor) q.pageCursor = r.lastSeq
      room -= r.messages.length
      if (r.messages.length + r.skipped === 0) {
        // the index counted rows that are not there (a commit that failed, a hand-edited broker.db):
        // the rows win, or the queue would wait for them forever
        q.paged = q.uncommitted.length
        q.pagedBytes = 0
        for (const m of q.uncommitted) q.pagedBytes += m.body.length
      }
    }
    while (room > 0 && q.paged === q.uncommitted.length && q.uncommitted.length > 0) {
      const m = q.uncommitted.shift()!
      q.ready.push(m)
      q.paged--
      q.pagedBytes -= m.body.length
      q.pageCursor = m.seq
      room--
    }
    if (q.paged === 0) q.pagedBytes = 0
  }

  /** The head of a queue, paging it in when the window is empty. */
  private takeHead(q: Queue): Message | undefined {
    if (q.ready.length === 0 && q.paged > 0) this.refill(q)
    return q.ready.shift()
  }

  /** Moves a message to its queue's dead-letter queue, or drops it when there is none. */
  private deadLetter(q: Queue, msg: Message, reason: string, statusIfDropped: MessageStatus): void {
    if (q.durable) this.store?.deleteMessage(msg.seq, msg.body.length)
    // expiry and max-length are bounds the operator set: they fill only a dead-letter queue the operator named
    const dlq = statusIfDropped === 'dead-lettered' || !q.defaultDeadLetter ? this.deadLetterQueueOf(q) : undefined
    if (!dlq) {
      this.setStatus(msg, statusIfDropped, q.name)
      return
    }
    this.totals.deadLettered++
    const moved: Message = {
      ...msg,
      seq: this.seq++,
      headers: {...msg.headers, 'x-death-reason': reason, 'x-death-queue': q.name, 'x-death-count': String(msg.deliveryCount)},
      deliveryCount: 0,
      redelivered: false,
      expiresAt: dlq.ttlMs ? this.now() + dlq.ttlMs : 0,
    }
    this.setStatus(msg, 'dead-lettered', dlq.name)
    this.enqueue(dlq, moved)
  }

  // ---- consume -----------------------------------------------------------------------------

  hasQueue(name: string): boolean {
    return this.queues.has(name)
  }

  consume(s: Session, queue: string, opts: {prefetch?: number; noAck?: boolean} = {}): string {
    const q = this.queues.get(queue)
    if (!q) throw new NotFoundError('queue', queue)
    if (!s.perms.canConsume(queue)) throw consumeRefused(s.perms, queue)
    const prefetch = opts.prefetch ?? 100
    if (!Number.isInteger(prefetch) || prefetch < 1 || prefetch > 65_535) throw new UsageError('E_BAD_PREFETCH', `prefetch ${prefetch} must be 1..65535`, {hint: 'Try this: --prefetch 100'})
    const c: Consumer = {inflight: 0, noAck: opts.noAck ?? false, prefetch, queue: q, session: s, tag: `ctag-${this.ctagSeq++}`}
    q.consumers.push(c)
    s.consumers.set(c.tag, c)
    this.schedule(q)
    return c.tag
  }

  cancel(s: Session, consumerTag: string): void {
    const c = s.consumers.get(consumerTag)
    if (!c) return
    s.consumers.delete(consumerTag)
    const i = c.queue.consumers.indexOf(c)
    if (i >= 0) c.queue.consumers.splice(i, 1)
    this.releaseFlow(c.queue)
    for (const u of s.unacked.values()) if (u.consumer === c) u.consumer = undefined
  }

  /** Pull one message; null when the queue is empty. */
  get(s: Session, queue: string, opts: {noAck?: boolean} = {}): DeliveryOut | null {
    const q = this.queues.get(queue)
    if (!q) throw new NotFoundError('queue', queue)
    if (!s.perms.canConsume(queue)) throw consumeRefused(s.perms, queue)
    if (!opts.noAck && s.unacked.size >= this.maxUnacked) throw new TempFailError('E_TOO_MANY_UNACKED', `this connection holds ${s.unacked.size} unacknowledged messages (limit ${this.maxUnacked})`, {hint: 'Try this: ack messages before getting more'})
    const msg = this.takeReady(q)
    if (!msg) return null
    return this.hand(s, q, msg, undefined, opts.noAck ?? false)
  }

  private takeReady(q: Queue): Message | undefined {
    for (;;) {
      // refill at half a window, so consumers rarely find the window empty
      if (q.paged > 0 && (q.ready.length === 0 || (q.ready.length * 2 <= this.windowMessages && q.ready.bytes * 2 <= this.windowBytes))) this.refill(q)
      const m = q.ready.shift()
      if (!m) return undefined
      if (m.expiresAt && m.expiresAt <= this.now()) {
        this.deadLetter(q, m, 'expired', 'expired')
        continue
      }
      return m
    }
  }

  private hand(s: Session, q: Queue, msg: Message, c: Consumer | undefined, noAck: boolean): DeliveryOut {
    msg.deliveryCount++
    const tag = s.nextTag++
    q.delivered++
    this.totals.delivered++
    if (noAck) {
      q.acked++
      this.totals.acknowledged++
      if (q.durable) this.store?.deleteMessage(msg.seq, msg.body.length)
      this.setStatus(msg, 'acknowledged', q.name)
    } else {
      s.unacked.set(tag, {consumer: c, msg, queue: q})
      q.unacked++
      // remembered on disk so a restart flags it redelivered (coalesced away if acked before the commit)
      if (q.durable) this.store?.updateDeliveryCount(msg.seq, msg.deliveryCount)
      if (c) c.inflight++
      this.setStatus(msg, 'delivered', q.name)
    }
    return {consumerTag: c?.tag ?? '', deliveryTag: tag, msg, queue: q.name}
  }

  private schedule(q: Queue): void {
    if (q.dispatchScheduled || q.consumers.length === 0 || q.messages === 0) return
    q.dispatchScheduled = true
    queueMicrotask(() => {
      q.dispatchScheduled = false
      this.dispatch(q)
    })
  }

  /** Re-dispatch after a transport drained its output buffer. */
  kick(s: Session): void {
    for (const c of s.consumers.values()) this.schedule(c.queue)
  }

  /** Push ready messages round-robin to consumers with room in their prefetch window. */
  /**
   * A queue with consumers that lag: flowHigh ready messages, or its ready bytes reach flowBytes (for a
   * non-durable queue half of its byte limit, transientMaxBytes). By count alone, 64 KiB messages from an unconfirmed publisher
   * filled the 64 MiB limit at 1,024 messages, long before flowHigh, and every publish after that
   * was refused (E_QUEUE_FULL) instead of the publisher being paused.
   */
  private lagging(q: Queue): boolean {
    return q.consumers.length > 0 && (q.messages >= this.flowHigh || this.readyBytes(q) >= this.flowBytes(q))
  }

  /** worked down far enough to let paused publishers go again */
  private caughtUp(q: Queue): boolean {
    return q.messages <= this.flowHigh / 2 && this.readyBytes(q) <= this.flowBytes(q) / 2
  }

  /** ready body bytes, in memory and paged out */
  private readyBytes(q: Queue): number {
    return q.ready.bytes + q.pagedBytes
  }

  /**
   * Where a consumed queue's publishers pause, in ready body bytes: a durable queue's in-memory window
   * (queue_window_bytes). A consumer that lags by more than the window would otherwise have every
   * further message paged out and read back (a read, an AES-GCM open and a body-sized allocation
   * each): 64 KiB messages reached that at 256 ready, long before flowHigh, and the page-ins cost the
   * broker more than the publishes. A queue without consumers still takes its whole backlog on disk.
   */
  private flowBytes(q: Queue): number {
    return q.durable ? this.windowBytes : this.transientMaxBytes / 2
  }

  /** Calls back once the queue's backlog is down to half of flowHigh and half of its flowBytes, it has no consumers, or it is gone. */
  whenFlowing(queue: string, cb: () => void): void {
    const q = this.queues.get(queue)
    if (!q || q.consumers.length === 0 || this.caughtUp(q)) {
      cb()
      return
    }
    q.flowWaiters.push(cb)
  }

  private releaseFlow(q: Queue, force = false): void {
    if (q.flowWaiters.length === 0) return
    if (!force && q.consumers.length > 0 && !this.caughtUp(q)) return
    const waiters = q.flowWaiters
    q.flowWaiters = []
    for (const w of waiters) w()
  }

  dispatch(q: Queue): void {
    if (!this.queues.has(q.name)) {
      this.releaseFlow(q, true)
      return
    }
    this.dispatchLoop(q)
    if (q.flowWaiters.length > 0) this.releaseFlow(q)
  }

  private dispatchLoop(q: Queue): void {
    while (q.messages > 0 && q.consumers.length > 0) {
      const chosen = nextConsumer(q, this.maxUnacked)
      if (!chosen) return
      const msg = this.takeReady(q)
      if (!msg) return
      const d = this.hand(chosen.session, q, msg, chosen, chosen.noAck)
      chosen.session.sink.deliver(d)
    }
  }

  // ---- acknowledgements --------------------------------------------------------------------

  private settle(s: Session, tag: number): Unacked {
    const u = s.unacked.get(tag)
    if (!u) {
      throw new UsageError('E_UNKNOWN_TAG', `delivery tag ${tag} is not an unacknowledged delivery of this connection (already settled?)`, {hint: 'Try this: ack each delivery once, on the connection that received it'})
    }
    s.unacked.delete(tag)
    u.queue.unacked--
    if (u.consumer) u.consumer.inflight--
    return u
  }

  ack(s: Session, tag: number): void {
    const u = this.settle(s, tag)
    u.queue.acked++
    this.totals.acknowledged++
    if (u.queue.durable) this.store?.deleteMessage(u.msg.seq, u.msg.body.length)
    // a redriven dead letter lives on in the queue it was republished to (see noteRedriven): that status stands
    if (this.redriven.size > 0 && this.redriven.get(u.msg.messageId) === u.queue.name) this.redriven.delete(u.msg.messageId)
    else this.setStatus(u.msg, 'acknowledged', u.queue.name)
    // synchronously, so the freed prefetch slot is filled before any later reply on this connection
    if (u.consumer && u.queue.messages > 0) this.dispatch(u.queue)
  }

  nack(s: Session, tag: number, requeue = true): void {
    if (!requeue) return this.reject(s, tag)
    const u = this.settle(s, tag)
    this.requeue(u.queue, u.msg)
    this.schedule(u.queue)
  }

  /**
   * To the dead-letter queue with the reason. On a queue without one (a dead-letter queue itself)
   * the message is not dropped: it stays unacknowledged on this connection, out of its way, and
   * returns to the queue when the connection closes.
   */
  reject(s: Session, tag: number, reason = 'rejected'): void {
    const u = s.unacked.get(tag)
    if (u && !this.deadLetterQueueOf(u.queue)) return
    this.settle(s, tag)
    this.deadLetter(u!.queue, u!.msg, reason.slice(0, 200) || 'rejected', 'dead-lettered')
    this.schedule(u!.queue)
  }

  /** The queue's dead-letter queue, declared again if an operator deleted it; undefined when it has none. */
  private deadLetterQueueOf(q: Queue): Queue | undefined {
    if (q.deadLetter === undefined) return undefined
    return this.queues.get(q.deadLetter) ?? this.declareQueue(q.deadLetter, {asDeadLetter: true, durable: q.durable})
  }

  /** Back to the head of its queue, or to the dead-letter queue once the delivery limit is reached (a queue without one keeps it). */
  private requeue(q: Queue, msg: Message): void {
    if (this.queues.get(q.name) !== q) return // queue was deleted meanwhile
    if (msg.deliveryCount >= this.deliveryLimit && this.deadLetterQueueOf(q)) {
      this.deadLetter(q, msg, 'delivery-limit', 'dead-lettered')
      return
    }
    msg.redelivered = true
    q.ready.unshift(msg)
    if (q.durable) this.store?.updateDeliveryCount(msg.seq, msg.deliveryCount)
    this.setStatus(msg, 'sent', q.name)
    this.schedule(q)
  }

  private expireHead(q: Queue): void {
    const now = this.now()
    // a bounded amount per sweep: an expired backlog on disk is worked off over several sweeps
    for (let n = 0; n < 20 * PAGE_CHUNK; n++) {
      if (q.ready.length === 0 && q.paged > 0) this.refill(q)
      const m = q.ready.peek()
      if (!m || !m.expiresAt || m.expiresAt > now) return
      q.ready.shift()
      this.deadLetter(q, m, 'expired', 'expired')
    }
  }

  // ---- statuses and stats ------------------------------------------------------------------

  private setStatus(m: Message, status: MessageStatus, queue?: string): void {
    this.statuses.setFor(m, status, queue)
    this.statusEvents[STATUS_CODE[status]]++
  }

  messageStatus(id: string): {messageId: string; status: MessageStatus; queue?: string} | null {
    return this.statuses.get(id)
  }

  private sampleRates(): void {
    const now = this.now()
    const dt = (now - this.rateSample.t) / 1000
    if (dt <= 0) return
    this.rates.publish = (this.totals.published - this.rateSample.published) / dt
    this.rates.deliver = (this.totals.delivered - this.rateSample.delivered) / dt
    this.rates.ack = (this.totals.acknowledged - this.rateSample.acknowledged) / dt
    const per = new Map<string, [number, number, number]>()
    for (const q of this.queues.values()) {
      const prev = this.rateSample.perQueue.get(q.name) ?? [q.published, q.delivered, q.acked]
      this.rates.perQueue.set(q.name, [(q.published - prev[0]) / dt, (q.delivered - prev[1]) / dt, (q.acked - prev[2]) / dt])
      per.set(q.name, [q.published, q.delivered, q.acked])
    }
    this.rateSample = {acknowledged: this.totals.acknowledged, delivered: this.totals.delivered, perQueue: per, published: this.totals.published, t: now}
  }

  listQueues(): QueueStats[] {
    const r1 = (n: number) => Math.round(n * 10) / 10
    return [...this.queues.values()]
      .map((q) => {
        const r = this.rates.perQueue.get(q.name) ?? [0, 0, 0]
        return {
          ackRate: r1(r[2]),
          acked: q.acked,
          consumers: q.consumers.length,
          deadLetter: q.deadLetter,
          deliverRate: r1(r[1]),
          delivered: q.delivered,
          durable: q.durable,
          maxLength: q.maxLength,
          messages: q.messages,
          memoryMessages: q.ready.length,
          memoryBytes: q.ready.bytes,
          diskBytes: q.pagedBytes,
          name: q.name,
          publishRate: r1(r[0]),
          published: q.published,
          ttlMs: q.ttlMs,
          unacked: q.unacked,
        }
      })
      .sort((a, b) => a.name.localeCompare(b.name))
  }

  listExchanges(): {name: string; type: ExchangeType; durable: boolean; bindings: number}[] {
    return [...this.exchanges.values()]
      .filter((e) => e.name !== '')
      .map((e) => ({bindings: e.bindingCount(), durable: e.durable, name: e.name, type: e.type}))
      .sort((a, b) => a.name.localeCompare(b.name))
  }

  listBindings(): {exchange: string; queue: string; routingKey: string}[] {
    const out: {exchange: string; queue: string; routingKey: string}[] = []
    for (const e of this.exchanges.values()) for (const [k, qs] of e.bindings) for (const q of qs) out.push({exchange: e.name, queue: q, routingKey: k})
    return out
  }

  stats(connections = this.sessions.size): BrokerStats {
    const exchanges = this.listExchanges()
    // live statuses from the queues themselves, final ones as counts since start
    const statuses: Record<string, number> = {}
    let ready = 0
    let unacked = 0
    for (const q of this.queues.values()) {
      ready += q.messages
      unacked += q.unacked
    }
    if (ready > 0) statuses.sent = ready
    if (unacked > 0) statuses.delivered = unacked
    for (const name of STATUS_NAMES) {
      const v = this.statusEvents[STATUS_CODE[name]]
      if (name !== 'sent' && name !== 'delivered' && v > 0) statuses[name] = v
    }
    return {
      bindingCount: exchanges.reduce((n, e) => n + e.bindings, 0),
      connections,
      exchangeCount: exchanges.length,
      exchanges,
      queues: this.listQueues(),
      rates: {ack: Math.round(this.rates.ack), deliver: Math.round(this.rates.deliver), publish: Math.round(this.rates.publish)},
      statuses,
      totals: {...this.totals},
      memory: this.memory.state(),
      uptimeMs: this.now() - this.started,
    }
  }
}

export type {StoredMessage}
