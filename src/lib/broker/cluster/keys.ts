/**
 * The one owner of cluster mode's Redis key schema (as BullMQ keeps its keys in one place).
 *
 * Every key of one queue shares the hash tag `{mq:CLUSTER:q:NAME}`, so Redis Cluster puts the
 * whole queue in one slot and a Lua script may touch all of them atomically. Cluster-wide keys
 * (definitions, node heartbeats, the key directory) share the tag `{mq:CLUSTER}`.
 */
import {UsageError} from '../../errors.js'

const NAME_RE = /^[A-Za-z0-9_.:@-]{1,100}$/

/** the consumer group of every queue stream */
export const GROUP = 'g'

export interface QueueKeys {
  /** the stream: one entry per ready or unacked message; the group's pending entries are the unacked ones */
  stream: string
  /** message id -> stream entry id of the live copy (status of live messages) */
  ids: string
  /** sorted set of deduplicated message ids, scored by publish time */
  dedupe: string
  /** message id -> final status code of settled messages (bounded by `doneLog`) */
  done: string
  /** settled message ids in settle order, trims `done` */
  doneLog: string
}

export class ClusterKeys {
  readonly base: string
  constructor(readonly cluster: string) {
    if (!NAME_RE.test(cluster)) throw new UsageError('E_BAD_NAME', `cluster name ${JSON.stringify(cluster)} is not valid: use 1-100 of A-Z a-z 0-9 _ . : @ -`, {hint: 'Try this: broker.cluster.name: prod-eu'})
    this.base = `{mq:${cluster}}`
  }

  queue(name: string): QueueKeys {
    const t = `{mq:${this.cluster}:q:${name}}`
    return {dedupe: `${t}:dd`, done: `${t}:done`, doneLog: `${t}:donelog`, ids: `${t}:ids`, stream: `${t}:s`}
  }

  /** hash exchange name -> type */
  get exchanges(): string {
    return `${this.base}:exchanges`
  }

  /** hash queue name -> JSON {durable, deadLetter, ttlMs, maxLength} */
  get queues(): string {
    return `${this.base}:queues`
  }

  /** set of JSON [exchange, queue, key] */
  get bindings(): string {
    return `${this.base}:bindings`
  }

  /** hash consumer name (node.epoch) -> last heartbeat, Redis server time in ms */
  get heartbeats(): string {
    return `${this.base}:hb`
  }

  /** hash consumer name -> JSON node info (address, connections, per-queue counters) */
  get nodes(): string {
    return `${this.base}:nodes`
  }

  /** hash identity name -> JSON {encCertPem, signCertPem}: the key directory */
  get keyDirectory(): string {
    return `${this.base}:keys`
  }

  /** hash {pem, order}: the newest CRL any node has seen, so every node enforces it */
  get crl(): string {
    return `${this.base}:crl`
  }

  /** pub/sub channel: definition changes, key directory and CRL updates */
  get events(): string {
    return `mq:${this.cluster}:events`
  }
}
