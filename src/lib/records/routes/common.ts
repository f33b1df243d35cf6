import type {FastifyRequest, preValidationHookHandler} from 'fastify'

import type {BrokerPublisher} from '../../broker/api-types.js'
import type {MqConfig} from '../../config/schema.js'
import {HttpError, parseJsonObject} from '../../http/errors.js'
import type {Logger} from '../../log.js'
import type {Delivery} from '../delivery.js'
import type {CaLike} from '../plugin.js'
import {MESSAGE_ID_RE, type MessageRecord, type RecordsStore} from '../store.js'

/** What the records route modules share: the store, the broker's publisher, metrics and the CA. */
export interface RecordsDeps {
  config: MqConfig
  store: RecordsStore
  publisher: BrokerPublisher
  log: Logger
  delivery: Delivery
  metrics: {registered: {inc(l: {client_id: string}): void}; failed: {inc(l: {client_id: string}): void}}
  timed: <T>(op: string, fn: () => Promise<T>) => Promise<T>
  getCa(): Promise<CaLike>
  /** copies the CA's client certificates into the store's client inventory */
  syncClients(): Promise<void>
}

export const PROXY = {roles: ['proxy']}
export const WORKER = {roles: ['worker']}
export const ADMIN = {roles: ['admin']}

/**
 * preValidation: the request body (a Buffer from the broker's API) as a JSON object, before the
 * route's schema checks it. 400 E_BAD_JSON for anything else; `optional` takes no body as {}.
 */
export function jsonBody(opts: {optional?: boolean} = {}): preValidationHookHandler {
  return (req, _reply, done) => {
    const raw = req.body as Buffer | undefined
    if (opts.optional && (raw === undefined || raw.length === 0)) {
      req.body = {}
      return done()
    }
    try {
      req.body = parseJsonObject(raw ?? Buffer.alloc(0), undefined, false)
      done()
    } catch (error) {
      done(error as Error)
    }
  }
}

export const query = (req: FastifyRequest) => req.query as Record<string, string | undefined>

const MESSAGE_ID_ERROR = {code: 'E_MESSAGE_ID', message: 'message_id must be 1-64 characters of [A-Za-z0-9._:-].'}
export const messageIdSchema = {pattern: MESSAGE_ID_RE.source, type: 'string', 'x-error': MESSAGE_ID_ERROR} as const
export const idParams = {properties: {id: messageIdSchema}, required: ['id'], type: 'object'} as const
export const emailParams = {properties: {email: {minLength: 1, type: 'string'}}, required: ['email'], type: 'object'} as const

/** An optional string field (null = absent), at most `max` characters. */
export const optionalString = (max: number) => ({maxLength: max, type: ['string', 'null']}) as const

export function messageId(v: unknown): string {
  if (typeof v !== 'string' || !MESSAGE_ID_RE.test(v)) throw new HttpError(422, MESSAGE_ID_ERROR.code, MESSAGE_ID_ERROR.message)
  return v
}

/** broker statuses after delivery that a records view shows instead of "delivered" */
const BROKER_FINAL = new Set(['dead-lettered', 'expired', 'dropped', 'purged'])

/**
 * A record's status as the operator should see it: once delivered into the broker, a message the
 * consumer rejected is dead-lettered (expired, dropped, purged) there, and `mq message list` must
 * say so as `mq message status` and `mq stats` do, not "delivered". broker_status is the broker's
 * latest status of the id (null when it no longer knows it).
 */
export function view(publisher: BrokerPublisher, r: MessageRecord) {
  const b = r.status === 'delivered' ? (publisher.status?.(r.message_id) ?? null) : null
  const gone = b !== null && BROKER_FINAL.has(b.status)
  return {
    attempts: r.attempts, broker_status: b?.status ?? null, client_id: r.client_id, delivered_at: r.delivered_at, key_version: r.key_version, last_attempt_at: r.last_attempt_at,
    last_error: r.last_error, message_id: r.message_id, queued_at: r.queued_at, ...(gone && b.queue ? {queue: b.queue} : {}), sender: r.sender_masked, sender_hash: r.sender_hash, status: gone ? b.status : r.status,
  }
}
