import {Args} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {relayClientFlags, relayClientFor} from '../../lib/relay/cli.js'

export default class RelaySendKey extends MqCommand<typeof RelaySendKey> {
  static args = {name: Args.string({description: 'the user to share a new symmetric key with', required: true})}
  static description = 'Make a new symmetric key, wrap it with NAME\'s public key (fetched if needed) and send it (message type 2)'
  static examples = ['<%= config.bin %> relay send-key bob']
  static flags = {...relayClientFlags}

  async run(): Promise<Record<string, unknown>> {
    const client = await relayClientFor(this.home, this.mqConfig(), this.flags, this.logger)
    try {
      const r = await client.sendKey(this.args.name)
      if (!this.jsonEnabled()) this.out(`sent a symmetric key to ${r.to} (message ${r.messageId})`)
      return r
    } finally {
      client.close()
    }
  }
}
