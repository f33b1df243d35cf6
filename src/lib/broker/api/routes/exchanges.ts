import type {ApiRoutes} from '../../api-types.js'
import type {BrokerEngine} from '../../backend.js'
import {MONITOR} from './common.js'

/** GET /api/exchanges (monitor right): exchanges and their bindings. */
export const exchangeRoutes = (engine: BrokerEngine): ApiRoutes =>
  async (app) => {
    app.get('/api/exchanges', {config: MONITOR}, async () => ({bindings: engine.listBindings(), exchanges: engine.listExchanges()}))
  }
