import {Args} from '@oclif/core'

import {withBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class QueuePurge extends MqCommand<typeof QueuePurge> {
  static args = {name: Args.string({description: 'queue name', required: true})}
  static description = 'Drop every ready message of a queue; unacknowledged deliveries are kept (admin only)'
  static examples = ['<%= config.bin %> queue purge orders']
  static flags = {...brokerFlags}

  async run(): Promise<{queue: string; messages: number}> {
    const r = await withBroker(this.home, this.mqConfig(), this.flags, (c) => c.purgeQueue(this.args.name))
    if (!this.jsonEnabled()) this.out(`queue ${this.args.name} purged (${r.messages} messages)`)
    return {queue: this.args.name, ...r}
  }
}
