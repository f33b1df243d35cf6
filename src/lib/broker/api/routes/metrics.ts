import type {ApiRoutes} from '../../api-types.js'

/** GET /metrics (monitor right): the broker's and its plugins' metrics in the Prometheus text format. */
export const metricsRoutes = (text: () => Promise<string>, contentType: string): ApiRoutes =>
  async (app) => {
    app.get('/metrics', {config: {roles: ['monitor']}}, async (_req, reply) => reply.type(contentType).send(await text()))
  }
