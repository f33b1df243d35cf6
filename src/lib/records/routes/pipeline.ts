import type {FastifyInstance} from 'fastify'

import {HttpError, errorBody, statusOf} from '../../http/errors.js'
import {PHONE_RE, assertBodyLength} from '../crypto.js'
import type {RecordsStore} from '../store.js'
import {PROXY, type RecordsDeps, WORKER, idParams, jsonBody, messageId, optionalString} from './common.js'

// Batch items are checked one by one in code, not by the route's schema: one bad item fails
// only itself (its own outcome in "results"), never the batch.

function str(body: Record<string, unknown>, key: string, opts: {required?: boolean; max?: number} = {}): string | undefined {
  const v = body[key]
  if (v === undefined || v === null) {
    if (opts.required) throw new HttpError(422, 'E_FIELD_MISSING', `Field ${key} is required.`)
    return undefined
  }
  if (typeof v !== 'string') throw new HttpError(422, 'E_FIELD_TYPE', `Field ${key} must be a string.`)
  if (opts.max !== undefined && v.length > opts.max) throw new HttpError(422, 'E_FIELD_TOO_LONG', `Field ${key} is longer than ${opts.max} characters.`)
  return v
}

function int(v: unknown, key: string): number | undefined {
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new HttpError(422, 'E_FIELD_TYPE', `Field ${key} must be a non-negative integer.`)
  return v
}

type Registration = Parameters<RecordsStore['register']>[0] & {serial?: string}

const errorResult = (e: unknown) => ({...errorBody(e), status: statusOf(e)})

/**
 * The ingest pipeline's internal API: POST /internal/messages/register (proxies), POST
 * /internal/messages/deliver (workers), PUT /internal/messages/:id/status (workers and proxies).
 * Each takes one message or a batch {"messages": [...]}, which is what they send under load.
 */
export default async function pipelineRoutes(app: FastifyInstance, deps: RecordsDeps): Promise<void> {
  const {config, delivery, log, metrics: m, store, timed} = deps

  const parseRegistration = (b: Record<string, unknown>): Registration => {
    const id = messageId(str(b, 'message_id', {required: true}))
    const clientId = str(b, 'client_id', {max: 255, required: true})!
    const sender = str(b, 'sender_number', {required: true})!
    if (!PHONE_RE.test(sender)) throw new HttpError(422, 'E_SENDER_NUMBER', 'sender_number must be an E.164 number like +4915200000000.')
    const body = str(b, 'message_body', {required: true})!
    assertBodyLength(body, config.proxy.max_body_chars)
    if (body.trim() === '') throw new HttpError(422, 'E_BODY_BLANK', 'message_body is blank.')
    const metadata = b.metadata ?? undefined
    if (metadata !== undefined && (typeof metadata !== 'object' || Array.isArray(metadata))) throw new HttpError(422, 'E_FIELD_TYPE', 'metadata must be a JSON object.')
    const queuedAt = str(b, 'queued_at')
    if (queuedAt !== undefined && Number.isNaN(Date.parse(queuedAt))) throw new HttpError(422, 'E_FIELD_TYPE', 'queued_at must be an ISO-8601 time.')
    return {
      clientId, messageId: id, payload: {message_body: body, metadata: metadata as Record<string, unknown> | undefined, sender_number: sender},
      queuedAt: queuedAt ? new Date(queuedAt).toISOString() : undefined, serial: str(b, 'client_serial', {max: 64}),
    }
  }

  // "last seen" of client certificates, at most once a minute per serial (not a write per message)
  const touched = new Map<string, number>()
  const noteClients = (regs: Registration[]) => {
    const t = Date.now()
    for (const r of regs) {
      if (!r.serial || (touched.get(r.serial) ?? 0) > t - 60_000) continue
      touched.set(r.serial, t)
      store.touchClient(r.clientId, r.serial).catch((e) => log.warn('client touch failed', {error: e}))
    }
  }

  app.post<{Body: Record<string, unknown>}>('/internal/messages/register', {config: PROXY, preValidation: jsonBody(), schema: {body: {type: 'object'}}}, async (req, reply) => {
    const b = req.body
    if (Array.isArray(b.messages)) {
      if (b.messages.length > 2000) throw new HttpError(413, 'E_BATCH_TOO_LARGE', 'At most 2000 messages per batch.')
      const parsed = b.messages.map((x) => {
        try {
          if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new HttpError(422, 'E_FIELD_TYPE', 'Each batch item must be a JSON object.')
          return parseRegistration(x as Record<string, unknown>)
        } catch (error) {
          return error as Error
        }
      })
      const ok = parsed.filter((p): p is Registration => !(p instanceof Error))
      const stored = await timed('register_batch', () => store.registerMany(ok))
      let k = 0
      const results = parsed.map((p) => {
        if (p instanceof Error) return errorResult(p)
        const r = stored[k++]
        if ('error' in r) return errorResult(r.error)
        if (r.created) m.registered.inc({client_id: r.record.client_id})
        return {client_id: r.record.client_id, created: r.created, message_id: r.record.message_id, queued_at: r.record.queued_at, status: r.record.status}
      })
      noteClients(ok)
      return {results}
    }
    const reg = parseRegistration(b)
    const r = await timed('register', () => store.register(reg))
    if (r.created) {
      m.registered.inc({client_id: reg.clientId})
      noteClients([reg])
    }
    return reply.code(r.created ? 201 : 200).send({client_id: r.record.client_id, created: r.created, message_id: reg.messageId, queued_at: r.record.queued_at, status: r.record.status})
  })

  app.post<{Body: Record<string, unknown> & {exchange?: string | null; routing_key?: string | null}}>('/internal/messages/deliver', {
    config: WORKER,
    preValidation: jsonBody(),
    schema: {body: {properties: {exchange: optionalString(255), routing_key: optionalString(255)}, type: 'object'}},
  }, async (req, reply) => {
    const b = req.body
    const exchange = b.exchange ?? config.worker.exchange
    const routingKey = b.routing_key ?? config.worker.routing_key
    if (Array.isArray(b.messages)) {
      if (b.messages.length > 1000) throw new HttpError(413, 'E_BATCH_TOO_LARGE', 'At most 1000 messages per batch.')
      const items = b.messages.map((x) => {
        const o = (typeof x === 'object' && x !== null ? x : {}) as Record<string, unknown>
        try {
          return {attempts: int(o.attempts, 'attempts'), id: messageId(str(o, 'message_id', {required: true}))}
        } catch (error) {
          return error as Error
        }
      })
      const good = items.filter((x): x is {id: string; attempts: number | undefined} => !(x instanceof Error))
      const done = await delivery.deliverMany(good, exchange, routingKey)
      let k = 0
      const results = items.map((x) => {
        if (x instanceof Error) return errorResult(x)
        const r = done[k++]
        return r.status === 200 ? r.body : {...r.body, message_id: x.id, status: r.status}
      })
      return {results}
    }
    const id = messageId(str(b, 'message_id', {required: true}))
    const [r] = await delivery.deliverMany([{attempts: int(b.attempts, 'attempts'), id}], exchange, routingKey)
    return reply.code(r.status).send(r.body)
  })

  app.put<{Params: {id: string}; Body: {status: 'queued' | 'processing' | 'failed'; attempts?: number | null; error?: string | null}}>('/internal/messages/:id/status', {
    config: {roles: [...WORKER.roles, ...PROXY.roles]},
    preValidation: jsonBody(),
    schema: {
      body: {
        properties: {
          attempts: {minimum: 0, type: ['integer', 'null'], 'x-error': {code: 'E_FIELD_TYPE', message: 'Field attempts must be a non-negative integer.'}},
          error: optionalString(10_000),
          status: {enum: ['queued', 'processing', 'failed'], type: 'string', 'x-error': {code: 'E_STATUS', message: 'status must be queued, processing or failed (delivery goes through /internal/messages/deliver).'}},
        },
        required: ['status'],
        type: 'object',
      },
      params: idParams,
    },
  }, async (req) => {
    const id = req.params.id
    const {status} = req.body
    const r = await timed('status', () => store.setStatus(id, status, {attempts: req.body.attempts ?? undefined, error: req.body.error ?? undefined}))
    if (r.changed && status === 'failed') m.failed.inc({client_id: r.record.client_id})
    return {attempts: r.record.attempts, changed: r.changed, last_attempt_at: r.record.last_attempt_at, message_id: id, status: r.record.status}
  })
}
