import {Args, Flags} from '@oclif/core'

import {withBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class ExchangeDelete extends MqCommand<typeof ExchangeDelete> {
  static args = {name: Args.string({description: 'exchange name', required: true})}
  static summary = 'Delete an exchange and its bindings (admin only); the bound queues and their messages stay.'
  static description = `Delete an exchange and its bindings (admin only). The queues that were bound to it, and their messages, stay.
With --if-unused the exchange is deleted only when no queue is bound to it (E_IN_USE, exit 1, otherwise).
The built-in default_exchange cannot be deleted.`
  static examples = ['<%= config.bin %> exchange delete shop', '<%= config.bin %> exchange delete shop --if-unused', '<%= config.bin %> exchange delete shop --json']
  static flags = {
    ...brokerFlags,
    'if-unused': Flags.boolean({description: 'refuse (E_IN_USE) while queues are bound to it'}),
  }

  async run(): Promise<{exchange: string; bindings: number}> {
    const f = this.flags
    const r = await withBroker(this.home, this.mqConfig(), f, (c) => c.deleteExchange(this.args.name, {ifUnused: f['if-unused']}))
    if (!this.jsonEnabled()) this.out(`exchange ${this.args.name} deleted (${r.bindings} binding${r.bindings === 1 ? '' : 's'} removed)`)
    return {bindings: r.bindings, exchange: this.args.name}
  }
}
