import {Args, Flags} from '@oclif/core'

import {withBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class QueueUnbind extends MqCommand<typeof QueueUnbind> {
  static args = {
    queue: Args.string({description: 'queue name', required: true}),
    exchange: Args.string({description: 'exchange name', required: true}),
  }
  static summary = 'Remove one binding of a queue to an exchange (the queue and its messages stay).'
  static description = `Remove the binding of QUEUE to EXCHANGE with routing key --key (the key or topic pattern given to mq queue bind;
fanout exchanges ignore it). Needs the same right as binding: admin, or consume on the queue and publish on the exchange.
A binding that does not exist is E_NOT_FOUND (exit 1), with the keys the queue is bound with as the hint.`
  static examples = ['<%= config.bin %> queue unbind orders shop --key order.created', '<%= config.bin %> queue unbind audit events --key "eu.#"', '<%= config.bin %> queue unbind mirror broadcast']
  static flags = {
    ...brokerFlags,
    key: Flags.string({char: 'k', default: '', description: 'routing key or topic pattern of the binding (ignored by fanout)'}),
  }

  async run(): Promise<{queue: string; exchange: string; routingKey: string}> {
    const {queue, exchange} = this.args
    const key = this.flags.key
    await withBroker(this.home, this.mqConfig(), this.flags, (c) => c.unbind(queue, exchange, key))
    if (!this.jsonEnabled()) this.out(`queue ${queue} unbound from ${exchange} (key ${JSON.stringify(key)})`)
    return {exchange, queue, routingKey: key}
  }
}
