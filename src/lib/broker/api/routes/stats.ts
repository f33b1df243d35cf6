import type {ApiRoutes} from '../../api-types.js'
import type {BrokerEngine} from '../../backend.js'
import {MONITOR} from './common.js'

/** GET /api/stats (monitor right): the engine's figures, queues and connections. */
export const statsRoutes = (engine: BrokerEngine, connections: () => number): ApiRoutes =>
  async (app) => {
    app.get('/api/stats', {config: MONITOR}, async () => engine.stats(connections()))
  }
