import type {FastifyInstance} from 'fastify'

import {HttpError, errorBody, statusOf} from '../../http/errors.js'
import {PHONE_RE, assertBodyLength} from '../crypto.js'
import type {RecordsStore} from '../store.js'
import {PROXY, type RecordsDeps, WORKER, idParams, jsonBody, messageId, messageIdSchema, optionalString} from './common.js'

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

/** A registration is late this long before the proxy's own deadline: the answer still has to reach it. */
const LATE_MARGIN_MS = 50

/**
 * The ingest pipeline's internal API: POST /internal/messages/register (proxies), POST
 * /internal/messages/deliver (workers), PUT /internal/messages/:id/status (workers and proxies),
 * POST /internal/messages/not-accepted (proxies).
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

  /**
   * The proxy sends how long it will still wait (deadline_ms) and answers 503 when that passes. A
   * registration the store commits after that moment (MySQL hung, then resumed) was not accepted:
   * it is answered as an error here too, and a record it created ends failed (NOT_ACCEPTED), never
   * queued for a delivery nobody was promised. A margin covers the answer's way back to the proxy.
   */
  const deadlineOf = (b: Record<string, unknown>, receivedAt: number): number | undefined => {
    const d = b.deadline_ms
    if (d === undefined || d === null) return undefined
    if (typeof d !== 'number' || !Number.isFinite(d) || d < 0) throw new HttpError(422, 'E_FIELD_TYPE', 'deadline_ms must be a non-negative number.')
    return receivedAt + d - LATE_MARGIN_MS
  }
  const lateError = () => new HttpError(503, 'E_REGISTER_LATE', 'The records store recorded the message after the proxy had stopped waiting; it was not accepted.', {hint: 'Try this: retry; with the same Idempotency-Key it is the same message.'})
  /** After the commit: registrations that finished late (the commit itself hung) are failed now. */
  const failLate = async (ids: string[]) => {
    if (!ids.length) return
    try {
      await store.markNotAccepted(ids, 'the records store answered after the proxy had answered 503')
    } catch (error) {
      // left queued: the worker's reconciler would deliver them (docs/pipeline.md, "Records of refused requests")
      log.warn('could not mark late registrations failed', {count: ids.length, error})
    }
  }

  app.post<{Body: Record<string, unknown>}>('/internal/messages/register', {config: PROXY, preValidation: jsonBody(), schema: {body: {type: 'object'}}}, async (req, reply) => {
    const receivedAt = Date.now()
    const b = req.body
    const deadline = deadlineOf(b, receivedAt)
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
      const stored = await timed('register_batch', () => store.registerMany(ok, {deadline}))
      if (deadline !== undefined && Date.now() > deadline) {
        await failLate(stored.flatMap((r) => ('record' in r && r.created && !r.late ? [r.record.message_id] : [])))
        for (const r of stored) if ('record' in r) r.late = true
      }
      let k = 0
      const results = parsed.map((p) => {
        if (p instanceof Error) return errorResult(p)
        const r = stored[k++]
        if ('error' in r) return errorResult(r.error)
        if (r.late) return errorResult(lateError())
        if (r.created) m.registered.inc({client_id: r.record.client_id})
        return {client_id: r.record.client_id, created: r.created, message_id: r.record.message_id, queued_at: r.record.queued_at, status: r.record.status}
      })
      noteClients(ok)
      return {results}
    }
    const reg = parseRegistration(b)
    const r = await timed('register', () => store.register(reg))
    if (deadline !== undefined && Date.now() > deadline) {
      if (r.created) await failLate([reg.messageId])
      throw lateError()
    }
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

  // the worker's reconciler: records still waiting for delivery, queued before now - older_than_ms
  app.get<{Querystring: Record<string, string | undefined>}>('/internal/messages/undelivered', {config: WORKER}, async (req) => {
    const q = req.query
    const older = Number(q.older_than_ms ?? NaN)
    if (!Number.isInteger(older) || older < 0) throw new HttpError(422, 'E_FIELD_TYPE', 'older_than_ms must be a non-negative integer.')
    const limit = Number(q.limit ?? 1000)
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new HttpError(422, 'E_LIMIT', 'limit must be an integer 1..10000.')
    let after: {at: string; id: number} | undefined
    if (q.after) {
      const mm = /^([0-9T:.Z-]{24})\|([0-9]{1,18})$/.exec(Buffer.from(q.after, 'base64url').toString('utf8'))
      if (!mm) throw new HttpError(400, 'E_CURSOR', 'after is not a cursor this endpoint handed out.')
      after = {at: mm[1], id: Number(mm[2])}
    }
    const {messages} = await timed('undelivered', () => store.undelivered({after, before: new Date(Date.now() - older).toISOString(), limit}))
    const last = messages.at(-1)
    const next = messages.length === limit && last ? Buffer.from(`${last.queued_at}|${last.id}`).toString('base64url') : null
    return {messages: messages.map(({id: _id, ...x}) => x), next}
  })

  // A proxy that answered 503 before our answer to its registration reached it: those records were
  // not accepted. Only records still queued change, so one accepted by a retry meanwhile keeps its status.
  app.post<{Body: {message_ids: string[]}}>('/internal/messages/not-accepted', {
    config: PROXY,
    preValidation: jsonBody(),
    schema: {
      body: {
        properties: {
          message_ids: {items: messageIdSchema, maxItems: 2000, minItems: 1, type: 'array', 'x-error': {code: 'E_FIELD_TYPE', message: 'message_ids must be a list of 1 to 2000 message ids.'}},
        },
        required: ['message_ids'],
        type: 'object',
      },
    },
  }, async (req) => {
    const changed = await timed('not_accepted', () => store.markNotAccepted(req.body.message_ids, 'the proxy answered 503 before the records store\'s answer reached it'))
    if (changed > 0) log.info('registrations refused by the proxy marked failed', {count: changed})
    return {changed}
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
