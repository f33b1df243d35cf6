import type {FastifyInstance} from 'fastify'

import {HttpError} from '../../http/errors.js'
import type {PortalDeps} from '../app.js'
import {audit, authenticate, userOf} from '../guard.js'

const LOGIN_FAILED = 'auth.login_failed'

/**
 * POST /portal/auth/login, /portal/auth/refresh, /portal/auth/logout and GET /portal/profile.
 * Failed logins are audit rows, and the rate limits count them there (per account and per
 * address), so every portal behind a load balancer sees the same counts.
 */
export default async function authRoutes(app: FastifyInstance, deps: PortalDeps): Promise<void> {
  const {store, tokens} = deps
  const cfg = deps.config.portal

  app.post<{Body: {email: string; password: string}}>('/portal/auth/login', {
    schema: {
      body: {
        additionalProperties: false,
        properties: {email: {maxLength: 255, minLength: 1, type: 'string'}, password: {maxLength: 1024, minLength: 1, type: 'string'}},
        required: ['email', 'password'],
        type: 'object',
      },
    },
  }, async (req, reply) => {
    const email = req.body.email.trim().toLowerCase()
    const since = new Date(Date.now() - cfg.login_window_s * 1000).toISOString()
    const [byAccount, byAddress] = await Promise.all([store.countEvents(LOGIN_FAILED, 'actor', email, since), store.countEvents(LOGIN_FAILED, 'ip', req.ip, since)])
    if (byAccount >= cfg.login_max_per_account || byAddress >= cfg.login_max_per_address) {
      throw new HttpError(429, 'E_RATE_LIMITED', 'Too many failed logins; wait before trying again.', {headers: {'retry-after': String(cfg.login_window_s)}, hint: `Try this: wait ${Math.ceil(cfg.login_window_s / 60)} minutes, or ask an admin to reset the password.`})
    }
    // unknown user and wrong password: one scrypt each, the same answer
    const user = await store.verifyUser(email, req.body.password)
    if (!user) {
      await store.audit({actor: email, event_type: LOGIN_FAILED, ip: req.ip, severity: 'warning'})
      throw new HttpError(401, 'E_LOGIN_FAILED', 'Wrong e-mail address or password.')
    }
    const pair = await tokens.login(user, req.ip)
    await store.audit({actor: user.email, event_type: 'auth.login', ip: req.ip})
    return reply.header('cache-control', 'no-store').send({...pair, user: {client_id: user.client_id, email: user.email, id: user.id, role: user.role}})
  })

  app.post<{Body: {refresh_token: string}}>('/portal/auth/refresh', {
    schema: {body: {additionalProperties: false, properties: {refresh_token: {maxLength: 128, minLength: 1, type: 'string'}}, required: ['refresh_token'], type: 'object'}},
  }, async (req, reply) => {
    const r = await tokens.refresh(req.body.refresh_token)
    if ('reuse' in r) {
      await store.audit({actor: r.reuse.email, data: {session: r.reuse.session}, event_type: 'auth.refresh_reuse', ip: req.ip, severity: 'critical'})
      throw new HttpError(401, 'E_REFRESH_REUSED', 'This refresh token was already used; the session has been revoked.', {hint: 'Try this: log in again.'})
    }
    return reply.header('cache-control', 'no-store').send(r.pair)
  })

  app.post('/portal/auth/logout', {preHandler: authenticate(tokens)}, async (req) => {
    const u = userOf(req)
    await tokens.revokeSession(u.session, 'logout')
    await audit(store, req, {event_type: 'auth.logout'})
    return {logged_out: true}
  })

  const nullable = {type: ['string', 'null']} as const
  const profile = {
    properties: {client_id: nullable, created_at: {type: 'string'}, email: {type: 'string'}, id: {type: 'integer'}, last_login_at: nullable, role: {type: 'string'}},
    required: ['client_id', 'created_at', 'email', 'id', 'last_login_at', 'role'],
    type: 'object',
  } as const
  app.get('/portal/profile', {preHandler: authenticate(tokens), schema: {response: {200: profile}}}, async (req) => {
    const u = await store.getUser(userOf(req).id)
    if (!u) throw new HttpError(404, 'E_NOT_FOUND', 'The user no longer exists.')
    return {client_id: u.client_id, created_at: u.created_at, email: u.email, id: u.id, last_login_at: u.last_login_at, role: u.role}
  })
}
