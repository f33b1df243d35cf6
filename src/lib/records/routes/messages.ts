import type {FastifyInstance} from 'fastify'

import {HttpError} from '../../http/errors.js'
import {MESSAGE_STATUSES} from '../store.js'
import {ADMIN, type RecordsDeps, idParams, query, view} from './common.js'

/** GET /admin/messages (filters, keyset by `before`) and GET /admin/messages/:id[?decrypt=1] (admin role; decrypts are audited). */
export default async function messageRoutes(app: FastifyInstance, deps: RecordsDeps): Promise<void> {
  const {publisher, store} = deps
  const limitError = {code: 'E_LIMIT', message: 'limit must be an integer 1..10000.'}

  app.get('/admin/messages', {
    config: ADMIN,
    schema: {
      querystring: {
        properties: {
          before: {type: 'string'},
          client: {type: 'string'},
          limit: {pattern: '^[0-9]{1,6}$', type: 'string', 'x-error': limitError},
          status: {enum: [...MESSAGE_STATUSES], type: 'string', 'x-error': {code: 'E_STATUS', message: `status must be one of ${MESSAGE_STATUSES.join(', ')}.`}},
        },
        type: 'object',
      },
    },
  }, async (req) => {
    const q = query(req)
    const limit = Number(q.limit ?? 50)
    if (limit < 1 || limit > 10_000) throw new HttpError(422, limitError.code, limitError.message)
    const rows = await store.list({before: q.before, client: q.client, limit, status: q.status})
    return {messages: rows.map((r) => view(publisher, r))}
  })

  app.get<{Params: {id: string}}>('/admin/messages/:id', {config: ADMIN, schema: {params: idParams, querystring: {properties: {decrypt: {type: 'string'}}, type: 'object'}}}, async (req) => {
    const id = req.params.id
    const decrypt = ['1', 'true', 'yes'].includes(query(req).decrypt ?? '')
    if (!decrypt) {
      const r = await store.get(id)
      if (!r) throw new HttpError(404, 'E_NOT_FOUND', `No message ${id}.`)
      return view(publisher, r)
    }
    const found = await store.payload(id)
    if (!found) throw new HttpError(404, 'E_NOT_FOUND', `No message ${id}.`)
    // the audit row is written before any plaintext leaves: no record, no answer
    await store.audit({actor: req.caller.identity, data: {message_id: id}, event_type: 'message.decrypt', identity: found.record.client_id, ip: req.caller.remote, severity: 'warning'})
    return {...view(publisher, found.record), message_body: found.payload.message_body, metadata: found.payload.metadata ?? {}, sender_number: found.payload.sender_number}
  })
}
