/**
 * The composition root for `mq broker start`: the broker core knows no other area, so the
 * areas that plug into it (the records store and the pipeline's internal API) are wired here.
 */
import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import type {Logger} from '../log.js'
import {type RunningBroker, type StartOptions, startBroker} from '../broker/runtime.js'
import {createRecordsPlugin} from '../records/plugin.js'

/** The API plugins every full broker mounts. */
export const BROKER_PLUGINS = [createRecordsPlugin]

export function startFullBroker(home: MqHome, config: MqConfig, logger: Logger, opts: Omit<StartOptions, 'plugins'> = {}): Promise<RunningBroker> {
  return startBroker(home, config, logger, {...opts, plugins: BROKER_PLUGINS})
}
