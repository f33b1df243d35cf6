import {Args, Flags} from '@oclif/core'

import {withBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class QueueBind extends MqCommand<typeof QueueBind> {
  static args = {queue: Args.string({description: 'queue name', required: true})}
  static description = 'Bind a queue to an exchange with a routing key (topic patterns may use * and #)'
  static examples = ['<%= config.bin %> queue bind orders --exchange shop --routing-key order.created', '<%= config.bin %> queue bind audit --exchange events --routing-key "eu.#"']
  static flags = {
    ...brokerFlags,
    exchange: Flags.string({char: 'e', description: 'exchange name', required: true}),
    'routing-key': Flags.string({char: 'k', default: '', description: 'routing key or topic pattern (ignored by fanout)'}),
  }

  async run(): Promise<{queue: string; exchange: string; routingKey: string}> {
    const f = this.flags
    await withBroker(this.home, this.mqConfig(), f, (c) => c.bind(this.args.queue, f.exchange, f['routing-key']))
    if (!this.jsonEnabled()) this.out(`queue ${this.args.queue} bound to ${f.exchange} with key ${JSON.stringify(f['routing-key'])}`)
    return {exchange: f.exchange, queue: this.args.queue, routingKey: f['routing-key']}
  }
}
