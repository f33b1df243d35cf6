/**
 * What the broker and its clients exchange beyond frames: the shapes of STATS, LIST_QUEUES,
 * STATUS and deliveries. Both sides import these; neither side's internals appear here.
 */

export type ExchangeType = 'direct' | 'fanout' | 'topic'

/** A message's last known status, as `STATUS` and `mq message status` report it. */
export const STATUS_NAMES = ['sent', 'delivered', 'acknowledged', 'dead-lettered', 'expired', 'dropped', 'purged'] as const
export type MessageStatus = (typeof STATUS_NAMES)[number]

export interface MessageStatusInfo {
  messageId: string
  status: MessageStatus
  queue?: string
}

/** One message handed to a consumer. */
export interface Delivery {
  deliveryTag: number
  messageId: string
  exchange: string
  routingKey: string
  queue: string
  body: Buffer
  headers: Record<string, string>
  redelivered: boolean
  deliveryCount: number
  timestamp: number
}

export interface QueueStats {
  name: string
  durable: boolean
  /** ready messages (in memory and paged out to disk) */
  messages: number
  /** of those, held in memory (a durable queue's window) and their body bytes */
  memoryMessages?: number
  memoryBytes?: number
  /** body bytes of the ready messages held only on disk (paged out) */
  diskBytes?: number
  unacked: number
  consumers: number
  deadLetter?: string
  ttlMs?: number
  maxLength?: number
  published: number
  delivered: number
  acked: number
  publishRate: number
  deliverRate: number
  ackRate: number
}

export interface BrokerStats {
  uptimeMs: number
  connections: number
  queues: QueueStats[]
  exchanges: {name: string; type: ExchangeType; durable: boolean; bindings: number}[]
  exchangeCount: number
  bindingCount: number
  statuses: Record<string, number>
  totals: {published: number; delivered: number; acknowledged: number; deadLettered: number; unroutable: number}
  rates: {publish: number; deliver: number; ack: number}
  /** cluster mode only: the cluster as this node sees it */
  cluster?: ClusterStatus
  /** the broker-wide memory high watermark: while alarm is true, publishers are paused */
  memory?: {rss: number; highWatermark: number; alarm: boolean}
}

/** One broker node of a cluster (cluster mode), as `mq cluster status` lists it. */
export interface ClusterNode {
  /** the consumer name the node reads under: node id and epoch */
  consumer: string
  node: string
  epoch: number
  alive: boolean
  /** the node that answered */
  self: boolean
  lastHeartbeatMsAgo: number
  info: Record<string, unknown>
}

export interface ClusterStatus {
  name: string
  /** the answering node's consumer name */
  node: string
  claimMs: number
  durability: {mode: 'fsync' | 'write'; promised: boolean; detail: string}
  nodes: ClusterNode[]
  /** acks and requeues refused because another node had claimed the message meanwhile */
  fencedSettles: number
  /** times the answering node lost its lease and started a new epoch */
  fences: number
  /** unacked messages of dead nodes the answering node put back */
  claimed: number
}


/**
 * The broker's definitions as `DEFINITIONS` answers and `mq definitions export` writes them (snake_case
 * in the file). deadLetter is null for none or the default NAME.dlq (the broker works it out again).
 */
export interface BrokerDefinitions {
  exchanges: {name: string; type: ExchangeType; durable: boolean}[]
  queues: {name: string; durable: boolean; deadLetter: string | null; ttlMs: number | null; maxLength: number | null}[]
  bindings: {exchange: string; queue: string; routingKey: string}[]
  /** the broker's broker.permissions rules, as configured */
  permissions?: Record<string, unknown>[]
}

/** One message `PEEK` shows: a copy, the queue is left as it was. */
export interface PeekedMessage {
  messageId: string
  exchange: string
  routingKey: string
  headers: Record<string, string>
  /** base64 of the body (of its first bytes when truncated) */
  body: string
  /** the body's size in bytes */
  size: number
  /** set when the body was cut to keep the reply within 8 MiB of bodies */
  truncated?: boolean
  timestamp: number
  redelivered: boolean
  deliveryCount: number
}
