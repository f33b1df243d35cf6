import type {FastifyInstance} from 'fastify'

import {HttpError} from '../../http/errors.js'
import type {PortalDeps} from '../app.js'
import {requireAdmin} from '../guard.js'
import type {PortalMetrics} from '../metrics.js'

/**
 * How old the counts of GET /admin/stats may be. Counting a million messages scans an index (a
 * second under load), and every admin's overview polls it: one computation serves them all.
 */
export const STATS_MAX_AGE_MS = 2000

/**
 * An answer computed at most once per maxAgeMs (counted from when its computation began), however
 * many ask meanwhile; those who ask during a computation wait for it. A failure is not kept.
 */
export function sharedAnswer<T>(compute: () => Promise<T>, maxAgeMs: number): () => Promise<T> {
  let last: {at: number; value: T} | undefined
  let running: Promise<T> | undefined
  return () => {
    if (last && Date.now() - last.at < maxAgeMs) return Promise.resolve(last.value)
    if (!running) {
      const at = Date.now()
      running = compute()
        .then((value) => {
          last = {at, value}
          return value
        })
        .finally(() => (running = undefined))
    }
    return running
  }
}

/**
 * GET /admin/stats: the records store's counts; GET /admin/overview: the broker's live statistics
 * (queues with depth and rates, connections) over its mutual-TLS API; GET /health; GET /metrics.
 */
export default async function statsRoutes(app: FastifyInstance, deps: PortalDeps & {metrics: PortalMetrics}): Promise<void> {
  const admin = requireAdmin(deps.tokens)
  const stats = sharedAnswer(() => deps.store.stats(), STATS_MAX_AGE_MS)

  app.get('/admin/stats', {preHandler: admin}, async () => stats())

  app.get('/admin/overview', {preHandler: admin}, async () => {
    if (!deps.broker) throw new HttpError(503, 'E_BROKER_UNAVAILABLE', 'The portal has no broker API configured.')
    try {
      return {at: new Date().toISOString(), broker: await deps.broker.stats()}
    } catch (error) {
      throw new HttpError(503, 'E_BROKER_UNAVAILABLE', `The broker's API did not answer: ${(error as Error).message}`, {hint: 'Try this: mq broker start, or check portal.broker_api and the portal identity certificate.'})
    }
  })

  app.get('/health', async (_req, reply) => {
    try {
      await deps.store.sql.ping()
      return {components: {store: {backend: deps.store.sql.label, status: 'ok'}}, status: 'ok'}
    } catch (error) {
      return reply.code(503).send({components: {store: {backend: deps.store.sql.label, error: (error as Error).message, status: 'failing'}}, status: 'failing'})
    }
  })

  // on the HTTPS listener for admins; Prometheus scrapes the loopback listener (portal.metrics_port)
  app.get('/metrics', {preHandler: admin}, async (_req, reply) => reply.type('text/plain; version=0.0.4').send(await deps.metrics.text()))
}
