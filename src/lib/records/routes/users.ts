import type {FastifyInstance} from 'fastify'

import {HttpError} from '../../http/errors.js'
import {USER_ROLES, type UserRole} from '../store.js'
import {ADMIN, type RecordsDeps, emailParams, jsonBody, optionalString} from './common.js'

/** GET/POST /admin/users, DELETE /admin/users/:email, POST /admin/users/:email/password (admin role, audited). */
export default async function userRoutes(app: FastifyInstance, deps: RecordsDeps): Promise<void> {
  const {store} = deps
  const password = {maxLength: 1024, type: 'string'} as const

  app.get('/admin/users', {config: ADMIN}, async () => ({users: await store.listUsers()}))

  app.post<{Body: {email: string; password: string; role?: UserRole | null; client?: string | null}}>('/admin/users', {
    config: ADMIN,
    preValidation: jsonBody(),
    schema: {
      body: {
        properties: {
          client: optionalString(255),
          email: {maxLength: 255, type: 'string'},
          password,
          role: {enum: [...USER_ROLES, null], type: ['string', 'null'], 'x-error': {code: 'E_ROLE', message: `role must be one of ${USER_ROLES.join(', ')}.`}},
        },
        required: ['email', 'password'],
        type: 'object',
      },
    },
  }, async (req, reply) => {
    const role = req.body.role ?? 'user'
    const client = req.body.client ?? null
    const u = await store.createUser(req.body.email, req.body.password, role, client)
    await store.audit({actor: req.caller.identity, data: {client, email: u.email, role}, event_type: 'user.create', identity: client, ip: req.caller.remote})
    return reply.code(201).send(u)
  })

  app.delete<{Params: {email: string}}>('/admin/users/:email', {config: ADMIN, schema: {params: emailParams}}, async (req) => {
    if (!(await store.deleteUser(req.params.email))) throw new HttpError(404, 'E_NOT_FOUND', `No user ${req.params.email}.`)
    await store.audit({actor: req.caller.identity, data: {email: req.params.email}, event_type: 'user.delete', ip: req.caller.remote})
    return {deleted: req.params.email}
  })

  app.post<{Params: {email: string}; Body: {password: string}}>('/admin/users/:email/password', {
    config: ADMIN,
    preValidation: jsonBody(),
    schema: {body: {properties: {password}, required: ['password'], type: 'object'}, params: emailParams},
  }, async (req) => {
    const u = await store.setPassword(req.params.email, req.body.password)
    if (!u) throw new HttpError(404, 'E_NOT_FOUND', `No user ${req.params.email}.`)
    await store.audit({actor: req.caller.identity, data: {email: u.email}, event_type: 'user.password', ip: req.caller.remote, severity: 'warning'})
    return {email: u.email, password_changed: true}
  })
}
