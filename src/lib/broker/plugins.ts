import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import type {Logger} from '../log.js'
import type {ApiPlugin, BrokerPublisher} from './api-types.js'

export interface ApiPluginContext {
  config: MqConfig
  home: MqHome
  publisher: BrokerPublisher
  logger: Logger
}

/** The plugins mounted on the broker's HTTPS API. Areas add theirs here (e.g. the records plugin). */
export async function loadApiPlugins(_ctx: ApiPluginContext): Promise<ApiPlugin[]> {
  return []
}
