import type {FastifyInstance} from 'fastify'

import {ADMIN, type RecordsDeps} from './common.js'

/** GET /admin/records/stats (admin role): messages by status, clients by status. */
export default async function statsRoutes(app: FastifyInstance, deps: RecordsDeps): Promise<void> {
  app.get('/admin/records/stats', {config: ADMIN}, async () => {
    await deps.syncClients().catch(() => {})
    return deps.store.stats()
  })
}
