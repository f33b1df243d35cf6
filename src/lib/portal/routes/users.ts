import type {FastifyInstance} from 'fastify'

import {HttpError} from '../../http/errors.js'
import {USER_ROLES, type UserRole} from '../../records/store.js'
import type {PortalDeps} from '../app.js'
import {audit, requireAdmin, userOf} from '../guard.js'

const idParams = {properties: {id: {pattern: '^[0-9]{1,18}$', type: 'string'}}, required: ['id'], type: 'object'} as const
const password = {maxLength: 1024, minLength: 8, type: 'string'} as const

/** GET/POST /admin/users, DELETE /admin/users/:id, POST /admin/users/:id/password (admin role). */
export default async function userRoutes(app: FastifyInstance, deps: PortalDeps): Promise<void> {
  const {store, tokens} = deps
  const admin = requireAdmin(tokens)

  app.get('/admin/users', {preHandler: admin}, async () => ({users: await store.listUsers()}))

  app.post<{Body: {email: string; password: string; role?: UserRole; client?: string | null}}>('/admin/users', {
    preHandler: admin,
    schema: {
      body: {
        additionalProperties: false,
        properties: {client: {maxLength: 255, pattern: '^[A-Za-z0-9._-]*$', type: ['string', 'null']}, email: {maxLength: 255, minLength: 3, type: 'string'}, password, role: {default: 'user', enum: [...USER_ROLES], type: 'string'}},
        required: ['email', 'password'],
        type: 'object',
      },
    },
  }, async (req, reply) => {
    const client = req.body.client || null
    const u = await store.createUser(req.body.email.trim(), req.body.password, req.body.role ?? 'user', client)
    await audit(store, req, {data: {client, email: u.email, role: u.role, user_id: u.id}, event_type: 'user.create', identity: client})
    return reply.code(201).send(u)
  })

  app.delete<{Params: {id: string}}>('/admin/users/:id', {preHandler: admin, schema: {params: idParams}}, async (req) => {
    if (Number(req.params.id) === userOf(req).id) throw new HttpError(409, 'E_USER_SELF', 'You cannot delete your own account.', {hint: 'Try this: let another admin do it.'})
    const u = await store.deleteUser(Number(req.params.id))
    tokens.sessionsChanged()
    if (!u) throw new HttpError(404, 'E_NOT_FOUND', `No user ${req.params.id}.`)
    await audit(store, req, {data: {email: u.email, user_id: u.id}, event_type: 'user.delete', severity: 'warning'})
    return {deleted: {email: u.email, id: u.id}}
  })

  app.post<{Params: {id: string}; Body: {password: string}}>('/admin/users/:id/password', {
    preHandler: admin,
    schema: {body: {additionalProperties: false, properties: {password}, required: ['password'], type: 'object'}, params: idParams},
  }, async (req) => {
    const u = await store.setPassword(Number(req.params.id), req.body.password)
    tokens.sessionsChanged()
    if (!u) throw new HttpError(404, 'E_NOT_FOUND', `No user ${req.params.id}.`)
    await audit(store, req, {data: {email: u.email, user_id: u.id}, event_type: 'user.password', severity: 'warning'})
    return {id: u.id, email: u.email, password_changed: true}
  })
}
