import type {Counter} from 'prom-client'

import type {BrokerPublisher} from '../broker/api-types.js'
import {HttpError, errorBody, statusOf} from '../http/errors.js'
import type {Logger} from '../log.js'
import type {DeliveryRecord, MessagePayload, RecordsStore} from './store.js'

/** What a delivered message looks like to consumers of the exchange. */
export interface DeliveredMessage extends MessagePayload {
  message_id: string
  client_id: string
  queued_at: string
}

/** One message's outcome: the status and body it answers with alone, or as an item of a batch. */
export interface Outcome {
  status: number
  body: Record<string, unknown>
}

type Found = {record: DeliveryRecord; payload: MessagePayload} | undefined

/**
 * Delivery of registered messages into the broker's exchange, each at most once at a time (a
 * reclaimed entry can race its slow first owner), with a memory of messages already published
 * whose "delivered" mark did not reach the store yet, so a retry during a database outage records
 * the delivery instead of publishing it twice. Across a broker crash the broker's own publish
 * deduplication (dedupe: true, see broker/dedupe.ts) does that: the id is committed with the
 * message, and settled once the mark is recorded.
 */
export class Delivery {
  private readonly inFlight = new Map<string, Promise<Outcome>>()
  private readonly publishedUnrecorded = new Map<string, {queues: string[]}>()
  // "delivered" marks of concurrent deliveries share one store transaction
  private marks: {messageId: string; attempts?: number; resolve: (r: {changed: boolean; at: string}) => void; reject: (e: unknown) => void}[] = []

  constructor(
    private readonly store: RecordsStore,
    private readonly publisher: BrokerPublisher,
    private readonly log: Logger,
    private readonly m: {delivered: Counter<'client_id'>; duplicates: Counter},
    /** runs a store operation under the mq_records_store_seconds timer */
    private readonly timed: <T>(op: string, fn: () => Promise<T>) => Promise<T>,
  ) {}

  /** Delivers several messages (one payload query), each at most once at a time. */
  async deliverMany(items: {id: string; attempts?: number}[], exchange: string, routingKey: string): Promise<Outcome[]> {
    const fresh = items.filter((it) => !this.inFlight.has(it.id))
    const found = fresh.length ? await this.timed('payload', () => this.store.payloads([...new Set(fresh.map((it) => it.id))])) : new Map()
    return Promise.all(
      items.map(async (it) => {
        const running = this.inFlight.get(it.id)
        if (running) {
          const r = await running
          return {...r, body: {...r.body, duplicate: true}}
        }
        const p = this.deliverOne(it.id, found.get(it.id), exchange, routingKey, it.attempts).catch((error) => ({body: errorBody(error) as unknown as Record<string, unknown>, status: statusOf(error)}))
        this.inFlight.set(it.id, p)
        try {
          return await p
        } finally {
          this.inFlight.delete(it.id)
        }
      }),
    )
  }

  /** Lets deliveries in progress record their outcome (the store is about to close). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.inFlight.values()])
  }

  private async deliverOne(id: string, found: Found, exchange: string, routingKey: string, attempts: number | undefined): Promise<Outcome> {
    if (!found) throw new HttpError(404, 'E_NOT_FOUND', `No message ${id} is registered.`)
    const {payload, record} = found
    if (record.status === 'delivered') {
      // recorded, so the broker need not remember the id (it may still, after a crash right after the mark)
      this.publisher.settle?.(id)
      return {body: {delivered_at: record.delivered_at, duplicate: true, message_id: id, status: 'delivered'}, status: 200}
    }
    if (record.status === 'failed') throw new HttpError(409, 'E_MESSAGE_FAILED', `Message ${id} was marked failed and dead-lettered; it is not delivered again.`)
    let queues = this.publishedUnrecorded.get(id)?.queues
    let alreadyPublished = false
    if (!queues) {
      const out: DeliveredMessage = {client_id: record.client_id, message_body: payload.message_body, message_id: id, metadata: payload.metadata ?? {}, queued_at: record.queued_at, sender_number: payload.sender_number}
      const r = await this.publisher.publish(exchange, routingKey, Buffer.from(JSON.stringify(out)), {dedupe: true, headers: {'content-type': 'application/json', 'x-client-id': record.client_id}, messageId: id})
      queues = r.queues
      if (r.duplicate) {
        alreadyPublished = true
        this.m.duplicates.inc()
        this.log.info('delivery already published (retried after the broker restarted before recording it): recording it, not publishing again', {message_id: id})
      }
      this.publishedUnrecorded.set(id, {queues})
    }
    const done = await this.markDelivered(id, attempts)
    this.publishedUnrecorded.delete(id)
    this.publisher.settle?.(id)
    if (done.changed) this.m.delivered.inc({client_id: record.client_id})
    return {body: {delivered_at: done.changed ? done.at : record.delivered_at ?? done.at, duplicate: alreadyPublished || !done.changed, message_id: id, queues, status: 'delivered'}, status: 200}
  }

  private markDelivered(messageId: string, attempts?: number): Promise<{changed: boolean; at: string}> {
    return new Promise((resolve, reject) => {
      this.marks.push({attempts, messageId, reject, resolve})
      if (this.marks.length > 1) return
      setImmediate(() => {
        const batch = this.marks
        this.marks = []
        this.timed('deliver', () => this.store.markDeliveredMany(batch))
          .then((r) => batch.forEach((b, k) => b.resolve(r[k])))
          .catch((error) => batch.forEach((b) => b.reject(error)))
      })
    })
  }
}
