import type {FastifyInstance} from 'fastify'

import type {PortalDeps} from '../app.js'
import {requireAdmin} from '../guard.js'

/** GET /admin/audit: the audit log, newest first (?before=<id of the last row> for the next page). */
export default async function auditRoutes(app: FastifyInstance, deps: PortalDeps): Promise<void> {
  app.get<{Querystring: {limit?: number; before?: number; type?: string; actor?: string}}>('/admin/audit', {
    preHandler: requireAdmin(deps.tokens),
    schema: {
      querystring: {
        additionalProperties: false,
        properties: {
          actor: {maxLength: 255, type: 'string'},
          before: {minimum: 1, type: 'integer'},
          limit: {default: 100, maximum: 1000, minimum: 1, type: 'integer'},
          type: {maxLength: 64, type: 'string'},
        },
        type: 'object',
      },
    },
  }, async (req) => {
    const q = req.query
    const events = await deps.store.auditLog({actor: q.actor || undefined, before: q.before, limit: q.limit, type: q.type || undefined})
    return {events, next: events.length === q.limit ? events.at(-1)!.id : null}
  })
}
