import type {ApiRoutes} from '../../api-types.js'
import type {BrokerEngine} from '../../backend.js'
import {errorJson} from '../app.js'
import {MONITOR, idParams} from './common.js'

/** GET /api/messages/:id (monitor right): the broker's latest status of a message id, as `mq message status` shows it. */
export const messageRoutes = (engine: BrokerEngine): ApiRoutes =>
  async (app) => {
    app.get<{Params: {id: string}}>('/api/messages/:id', {config: MONITOR, schema: {params: idParams}}, async (req, reply) => {
      const st = await engine.messageStatus(req.params.id)
      return st ?? reply.code(404).send(errorJson('E_NOT_FOUND', `no status for message ${req.params.id}`))
    })
  }
