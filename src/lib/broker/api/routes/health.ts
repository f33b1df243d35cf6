import {type HealthReport, healthHttpStatus, publicHealth} from '../../../health/index.js'
import type {ApiRoutes} from '../../api-types.js'

/** GET /health: anyone gets the verdicts (load balancers, curl -k); monitors also the details (latencies, backends, errors, files). */
export const healthRoutes = (health: () => Promise<HealthReport>): ApiRoutes =>
  async (app) => {
    app.get('/health', {config: {anonymous: true}}, async (req, reply) => {
      const h = await health()
      return reply.code(healthHttpStatus(h.status)).send(req.caller.roles.includes('monitor') ? h : publicHealth(h))
    })
  }
