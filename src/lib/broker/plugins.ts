import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import type {Logger} from '../log.js'
import {createRecordsPlugin} from '../records/plugin.js'
import type {ApiPlugin, BrokerPublisher} from './api-types.js'

export interface ApiPluginContext {
  config: MqConfig
  home: MqHome
  publisher: BrokerPublisher
  logger: Logger
}

/** The plugins mounted on the broker's HTTPS API. Areas add theirs here (e.g. the records plugin). */
export async function loadApiPlugins(ctx: ApiPluginContext): Promise<ApiPlugin[]> {
  // records store + ingest pipeline internal API + operator API (issue 5)
  return [await createRecordsPlugin(ctx)]
}
