import type {FastifyInstance} from 'fastify'

import {MqError} from '../../errors.js'
import {HttpError} from '../../http/errors.js'
import {CLIENT_STATUSES} from '../store.js'
import {ADMIN, type RecordsDeps, jsonBody, optionalString, query} from './common.js'

/** GET /admin/clients (the client certificate inventory) and POST /admin/clients/:id/revoke (admin role, audited). */
export default async function clientRoutes(app: FastifyInstance, deps: RecordsDeps): Promise<void> {
  const {log, store} = deps

  app.get('/admin/clients', {
    config: ADMIN,
    schema: {querystring: {properties: {status: {enum: [...CLIENT_STATUSES], type: 'string', 'x-error': {code: 'E_STATUS', message: `status must be one of ${CLIENT_STATUSES.join(', ')}.`}}}, type: 'object'}},
  }, async (req) => {
    await deps.syncClients().catch((e) => log.warn('could not sync clients from the CA', {error: e}))
    return {clients: await store.listClients({status: query(req).status})}
  })

  app.post<{Params: {id: string}; Body: {reason?: string | null}}>('/admin/clients/:id/revoke', {
    config: ADMIN,
    preValidation: jsonBody({optional: true}),
    schema: {body: {properties: {reason: optionalString(255)}, type: 'object'}, params: {properties: {id: {minLength: 1, type: 'string'}}, required: ['id'], type: 'object'}},
  }, async (req) => {
    const reason = req.body.reason ?? 'unspecified'
    const ca = await deps.getCa()
    let revoked
    try {
      revoked = await ca.revoke(req.params.id, reason as never)
    } catch (error) {
      if (error instanceof MqError && /NOT_FOUND|UNKNOWN/.test(error.code)) throw new HttpError(404, error.code, error.message, {hint: error.hint})
      throw error
    }
    await deps.syncClients()
    for (const r of revoked) await store.markClientRevoked(r.serial, reason)
    await store.audit({actor: req.caller.identity, data: {reason, serials: revoked.map((r) => r.serial)}, event_type: 'client.revoke', identity: req.params.id, ip: req.caller.remote, severity: 'warning'})
    return {reason, revoked: revoked.map((r) => ({identity: r.name, serial: r.serial}))}
  })
}
