import type {FastifyInstance} from 'fastify'

import {ADMIN, type RecordsDeps, query} from './common.js'

/** GET /admin/audit (admin role): the audit log, newest first, by type and actor, keyset by `before`. */
export default async function auditRoutes(app: FastifyInstance, deps: RecordsDeps): Promise<void> {
  app.get('/admin/audit', {
    config: ADMIN,
    schema: {querystring: {properties: {actor: {type: 'string'}, before: {type: 'string'}, limit: {type: 'string'}, type: {type: 'string'}}, type: 'object'}},
  }, async (req) => {
    const q = query(req)
    const events = await deps.store.auditLog({actor: q.actor, before: q.before ? Number(q.before) : undefined, limit: Number(q.limit ?? 100) || 100, type: q.type})
    return {events}
  })
}
