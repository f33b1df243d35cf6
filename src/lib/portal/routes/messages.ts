import type {FastifyInstance} from 'fastify'

import {HttpError} from '../../http/errors.js'
import {MESSAGE_STATUSES, type MessageRecord} from '../../records/store.js'
import type {PortalDeps} from '../app.js'
import {audit, authenticate, requireAdmin, userOf} from '../guard.js'

/** A message as the portal shows it: the number masked, never the body. */
export const messageView = (r: MessageRecord) => ({
  attempts: r.attempts, client_id: r.client_id, delivered_at: r.delivered_at, last_attempt_at: r.last_attempt_at, last_error: r.last_error,
  message_id: r.message_id, queued_at: r.queued_at, sender: r.sender_masked, status: r.status, updated_at: r.updated_at,
})

const nullable = {type: ['string', 'null']} as const
/** messageView's shape: fastify serialises answers by it (fast-json-stringify), and nothing else leaves */
const messageSchema = {
  properties: {
    attempts: {type: 'integer'}, client_id: {type: 'string'}, delivered_at: nullable, last_attempt_at: nullable, last_error: nullable,
    message_id: {type: 'string'}, queued_at: {type: 'string'}, sender: {type: 'string'}, status: {type: 'string'}, updated_at: {type: 'string'},
  },
  required: ['attempts', 'client_id', 'delivered_at', 'last_attempt_at', 'last_error', 'message_id', 'queued_at', 'sender', 'status', 'updated_at'],
  type: 'object',
} as const

const iso = (v: string | undefined, name: string): string | undefined => {
  if (v === undefined || v === '') return undefined
  const t = Date.parse(v)
  if (Number.isNaN(t)) throw new HttpError(422, 'E_VALIDATION', `${name} must be a date or ISO-8601 time.`)
  return new Date(t).toISOString()
}

const idParams = {properties: {id: {pattern: '^[A-Za-z0-9._:-]{1,64}$', type: 'string'}}, required: ['id'], type: 'object'} as const

/**
 * GET /portal/messages: the messages of the user's own client (admins: all, or ?client=), newest
 * first, by keyset pages (`next` is the cursor of the following page); filters status, from, to.
 * GET /portal/messages/:id: one of them. GET /admin/messages/:id?decrypt=1: the plaintext, audited.
 */
export default async function messageRoutes(app: FastifyInstance, deps: PortalDeps): Promise<void> {
  const {store, tokens} = deps

  app.get<{Querystring: {status?: string; from?: string; to?: string; limit?: number; cursor?: string; client?: string}}>('/portal/messages', {
    preHandler: authenticate(tokens),
    schema: {
      querystring: {
        additionalProperties: false,
        properties: {
          client: {maxLength: 255, type: 'string'},
          cursor: {maxLength: 128, type: 'string'},
          from: {maxLength: 40, type: 'string'},
          limit: {default: 50, maximum: 200, minimum: 1, type: 'integer'},
          status: {enum: [...MESSAGE_STATUSES, ''], type: 'string'},
          to: {maxLength: 40, type: 'string'},
        },
        type: 'object',
      },
      response: {200: {properties: {messages: {items: messageSchema, type: 'array'}, next: nullable}, required: ['messages', 'next'], type: 'object'}},
    },
  }, async (req) => {
    const u = userOf(req)
    const q = req.query
    // a user sees their client's messages only, whatever ?client= says; a user without a client sees none
    const client = u.role === 'admin' ? q.client || undefined : u.client_id
    if (client === null) return {messages: [], next: null}
    const page = await store.page({client, cursor: q.cursor, from: iso(q.from, 'from'), limit: q.limit, status: q.status || undefined, to: iso(q.to, 'to')})
    return {messages: page.messages.map(messageView), next: page.next}
  })

  app.get<{Params: {id: string}}>('/portal/messages/:id', {preHandler: authenticate(tokens), schema: {params: idParams, response: {200: messageSchema}}}, async (req) => {
    const u = userOf(req)
    const r = await store.get(req.params.id)
    // another client's message is as absent as a missing one
    if (!r || (u.role !== 'admin' && r.client_id !== u.client_id)) throw new HttpError(404, 'E_NOT_FOUND', `No message ${req.params.id}.`)
    return messageView(r)
  })

  app.get<{Params: {id: string}; Querystring: {decrypt?: string}}>('/admin/messages/:id', {
    preHandler: requireAdmin(tokens),
    schema: {params: idParams, querystring: {additionalProperties: false, properties: {decrypt: {enum: ['0', '1', 'true', 'false'], type: 'string'}}, type: 'object'}},
  }, async (req) => {
    const decrypt = req.query.decrypt === '1' || req.query.decrypt === 'true'
    if (!decrypt) {
      const r = await store.get(req.params.id)
      if (!r) throw new HttpError(404, 'E_NOT_FOUND', `No message ${req.params.id}.`)
      return messageView(r)
    }
    const found = await store.payload(req.params.id)
    if (!found) throw new HttpError(404, 'E_NOT_FOUND', `No message ${req.params.id}.`)
    // the audit row is written before any plaintext leaves: no record, no answer
    await audit(store, req, {data: {message_id: req.params.id}, event_type: 'message.decrypt', identity: found.record.client_id, severity: 'warning'})
    return {...messageView(found.record), message_body: found.payload.message_body, metadata: found.payload.metadata ?? {}, sender_number: found.payload.sender_number}
  })
}
