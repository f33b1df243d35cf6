import {Args} from '@oclif/core'

import {withBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class QueueDelete extends MqCommand<typeof QueueDelete> {
  static args = {name: Args.string({description: 'queue name', required: true})}
  static description = 'Delete a queue, its bindings and its messages (admin only)'
  static examples = ['<%= config.bin %> queue delete orders']
  static flags = {...brokerFlags}

  async run(): Promise<{queue: string; messages: number}> {
    const r = await withBroker(this.home, this.mqConfig(), this.flags, (c) => c.deleteQueue(this.args.name))
    if (!this.jsonEnabled()) this.out(`queue ${this.args.name} deleted (${r.messages} ready messages dropped)`)
    return {queue: this.args.name, ...r}
  }
}
