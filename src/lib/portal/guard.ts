import type {FastifyReply, FastifyRequest, preHandlerAsyncHookHandler} from 'fastify'

import {HttpError} from '../http/errors.js'
import type {AuditEvent, RecordsStore} from '../records/store.js'
import type {PortalUser, TokenService} from './tokens.js'

/** preHandler: a valid access token (Authorization: Bearer) with a live session; sets req.portalUser. */
export function authenticate(tokens: TokenService): preHandlerAsyncHookHandler {
  return async (req: FastifyRequest) => {
    const m = /^Bearer ([A-Za-z0-9_.-]+)$/.exec(req.headers.authorization ?? '')
    if (!m) throw new HttpError(401, 'E_UNAUTHENTICATED', 'An access token is required (Authorization: Bearer ...).', {headers: {'www-authenticate': 'Bearer'}, hint: 'Try this: POST /portal/auth/login'})
    req.portalUser = await tokens.verify(m[1])
  }
}

/** preHandler after authenticate: the user's role must be admin. */
export function requireAdmin(tokens: TokenService): preHandlerAsyncHookHandler[] {
  return [
    authenticate(tokens),
    async (req: FastifyRequest, _reply: FastifyReply) => {
      if (req.portalUser?.role !== 'admin') throw new HttpError(403, 'E_FORBIDDEN', 'This needs the admin role.')
    },
  ]
}

export const userOf = (req: FastifyRequest): PortalUser => req.portalUser!

/** An audit row for an action of the request's user: who, what, from where (when is added by the store). */
export function audit(store: RecordsStore, req: FastifyRequest, e: Omit<AuditEvent, 'actor' | 'ip'>): Promise<void> {
  return store.audit({...e, actor: req.portalUser?.email ?? null, ip: req.ip})
}
