import {Args} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {relayClientFlags, relayClientFor} from '../../lib/relay/cli.js'

export default class RelayRequestKey extends MqCommand<typeof RelayRequestKey> {
  static args = {name: Args.string({description: 'the user to ask for a symmetric key', required: true})}
  static description = 'Ask NAME to send you a symmetric key (message type 1)'
  static examples = ['<%= config.bin %> relay request-key bob']
  static flags = {...relayClientFlags}

  async run(): Promise<Record<string, unknown>> {
    const client = await relayClientFor(this.home, this.mqConfig(), this.flags, this.logger)
    try {
      const r = await client.requestKey(this.args.name)
      if (!this.jsonEnabled()) this.out(`asked ${r.to} for a symmetric key (message ${r.messageId})`)
      return r
    } finally {
      client.close()
    }
  }
}
