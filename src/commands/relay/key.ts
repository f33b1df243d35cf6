import {Args} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {relayClientFlags, relayClientFor} from '../../lib/relay/cli.js'

export default class RelayKey extends MqCommand<typeof RelayKey> {
  static args = {name: Args.string({description: 'the user whose public key to fetch', required: true})}
  static description = 'Fetch NAME\'s public key from the relay and keep it (compare the fingerprint with them out of band)'
  static examples = ['<%= config.bin %> relay key bob']
  static flags = {...relayClientFlags}

  async run(): Promise<Record<string, unknown>> {
    const client = await relayClientFor(this.home, this.mqConfig(), this.flags, this.logger)
    try {
      const r = await client.key(this.args.name)
      if (!this.jsonEnabled()) this.out(`${r.name} ${r.id} public key sha256:${r.fingerprint} (${r.bytes} bytes)`)
      return r
    } finally {
      client.close()
    }
  }
}
