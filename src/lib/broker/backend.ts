/**
 * The seam between the transports (native server, CipherMQ listener, HTTPS API) and a queue
 * backend. The in-memory Engine (standalone mode, SQLite store) and the ClusterEngine (queues on
 * Redis, cluster/engine.ts) both satisfy it. Answers that a cluster must fetch from Redis may be
 * promises (`Sync<T>`); the transports await them when they are.
 */
import type {BrokerDefinitions, BrokerStats, ExchangeType, MessageStatusInfo, QueueStats} from '../wire/types.js'
import type {Message} from './message.js'
import type {MemoryWatermark} from './memory.js'
import type {DeliveryOut, Permissions, PublishOptions, PublishResult, QueueOptions, Session, SessionSink} from './engine.js'

export type Sync<T> = T | Promise<T>

/** Calls fn with v now, or once the promise settles (errors go to onError). */
export function whenReady<T>(v: Sync<T>, fn: (x: T) => void, onError: (e: unknown) => void): void {
  if (v instanceof Promise) v.then(fn, onError)
  else fn(v)
}

export interface CommitTracker {
  /** calls back once every write issued so far is durable (err when one of them failed) */
  afterCommit(cb: (err?: Error) => void): void
  /** resolves once every write issued so far has committed (graceful stop) */
  flush(): Promise<void>
}

export interface BrokerEngine {
  readonly store?: CommitTracker
  /** the broker-wide memory high watermark (publishers pause above it) */
  readonly memory: MemoryWatermark
  readonly queues: {has(name: string): boolean; readonly size: number}
  readonly totals: BrokerStats['totals']
  start(): void
  stop(): void
  openSession(identity: string, sink: SessionSink, perms?: Permissions): Session
  closeSession(s: Session): void
  kick(s: Session): void
  declareExchange(name: string, type: ExchangeType, opts?: {durable?: boolean}): {name: string; type: ExchangeType}
  declareQueue(name: string, opts?: QueueOptions): {name: string; durable: boolean; ready: {readonly length: number}}
  bind(queue: string, exchange: string, key: string): void
  unbind(queue: string, exchange: string, key: string): void
  /** returns how many bindings went with it */
  deleteExchange(name: string, opts?: {ifUnused?: boolean}): Sync<number>
  /** the head of a queue, left as it is (see Engine.peek) */
  peek(queue: string, count: number): Sync<{messages: Message[]; ready: number}>
  definitions(): BrokerDefinitions
  deleteQueue(name: string): Sync<number>
  purgeQueue(name: string): Sync<number>
  publish(exchange: string, routingKey: string, body: Buffer, opts?: PublishOptions, perms?: Permissions): PublishResult
  /** `headers` are every message's (one object, shared) */
  publishMany(exchange: string, routingKey: string, bodies: Buffer[], ids: (string | undefined)[], perms?: Permissions, headers?: Record<string, string>): PublishResult
  settlePublished(messageId: string): boolean
  whenFlowing(queue: string, cb: () => void): void
  /** whether a queue exists (cluster mode: reloads the definitions once before it says no) */
  hasQueue(name: string): Sync<boolean>
  /** the consumer tag; a cluster node that does not know the queue yet reloads the definitions first */
  consume(s: Session, queue: string, opts?: {prefetch?: number; noAck?: boolean}): Sync<string>
  cancel(s: Session, consumerTag: string): void
  get(s: Session, queue: string, opts?: {noAck?: boolean}): Sync<DeliveryOut | null>
  ack(s: Session, tag: number): void
  nack(s: Session, tag: number, requeue?: boolean): void
  reject(s: Session, tag: number, reason?: string): void
  messageStatus(id: string): Sync<MessageStatusInfo | null>
  listQueues(): QueueStats[]
  listExchanges(): {name: string; type: ExchangeType; durable: boolean; bindings: number}[]
  listBindings(): {exchange: string; queue: string; routingKey: string}[]
  stats(connections?: number): BrokerStats
}
