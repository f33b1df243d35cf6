import {Args, Flags} from '@oclif/core'

import {withBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class ExchangeDeclare extends MqCommand<typeof ExchangeDeclare> {
  static args = {name: Args.string({description: 'exchange name', required: true})}
  static description = 'Declare an exchange (idempotent; the type of an existing exchange cannot change)'
  static examples = ['<%= config.bin %> exchange declare events --type topic', '<%= config.bin %> exchange declare broadcast --type fanout']
  static flags = {
    ...brokerFlags,
    type: Flags.option({default: 'direct' as const, description: 'routing: direct (exact key), fanout (every bound queue), topic (* and # patterns)', options: ['direct', 'fanout', 'topic'] as const})(),
    transient: Flags.boolean({description: 'do not store the definition (lost on restart)'}),
  }

  async run(): Promise<{exchange: string; type: string}> {
    const f = this.flags
    await withBroker(this.home, this.mqConfig(), f, (c) => c.declareExchange(this.args.name, f.type, {durable: !f.transient}))
    if (!this.jsonEnabled()) this.out(`exchange ${this.args.name} (${f.type}) declared`)
    return {exchange: this.args.name, type: f.type}
  }
}
