import type {ApiRoutes} from '../../api-types.js'
import type {BrokerEngine} from '../../backend.js'
import {ADMIN, MONITOR, nameParams} from './common.js'

/** GET /api/queues (monitor right); DELETE /api/queues/:name and POST /api/queues/:name/purge (admin role). */
export const queueRoutes = (engine: BrokerEngine): ApiRoutes =>
  async (app) => {
    app.get('/api/queues', {config: MONITOR}, async () => engine.listQueues())
    app.delete<{Params: {name: string}}>('/api/queues/:name', {config: ADMIN, schema: {params: nameParams}}, async (req) => ({messages: await engine.deleteQueue(req.params.name)}))
    app.post<{Params: {name: string}}>('/api/queues/:name/purge', {config: ADMIN, schema: {params: nameParams}}, async (req) => ({messages: await engine.purgeQueue(req.params.name)}))
  }
