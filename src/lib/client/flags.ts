import {Flags} from '@oclif/core'

import {durationFlag} from '../cli/duration-flag.js'

/** Connection flags every broker client command spreads into its own flags. */
export const brokerFlags = {
  broker: Flags.string({description: 'broker address: HOST, HOST:PORT or mqs://HOST:PORT [default: client.broker, else broker.host:broker.port of this home]', env: 'MQ_BROKER', helpGroup: 'BROKER'}),
  identity: Flags.string({description: 'client identity: uses $MQ_HOME/pki/issued/NAME.crt|.key [default: client.identity, admin]', env: 'MQ_IDENTITY', helpGroup: 'BROKER'}),
  timeout: durationFlag({description: 'how long to wait for the broker: 500ms, 10s or 2m [default: client.timeout_ms, 10s]', helpGroup: 'BROKER'}),
}
