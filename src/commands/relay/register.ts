import {Args, Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {relayClientFlags, relayClientFor, suiteFromFlag} from '../../lib/relay/cli.js'

export default class RelayRegister extends MqCommand<typeof RelayRegister> {
  static args = {name: Args.string({description: 'user name: 1-254 printable ASCII characters', required: true})}
  static description = `Register NAME on the relay: makes a key pair, sends the public key, keeps the client id and private key under $MQ_HOME/relay/ (0600)

Default crypto is strong (RSA-2048, RSA-OAEP-SHA-256, AES-256-GCM; protocol v3). --compat messageu uses MessageU's weak crypto (RSA-1024, OAEP-SHA-1, AES-128-CBC with a zero IV) over protocol v2, only to talk to existing MessageU clients.`

  static examples = ['<%= config.bin %> relay register alice --relay 127.0.0.1:1357', '<%= config.bin %> relay register bob --compat messageu']

  static flags = {
    ...relayClientFlags,
    bits: Flags.integer({default: 2048, description: 'RSA key size for the strong suite', min: 2048, max: 8192}),
    force: Flags.boolean({description: 'replace this home\'s existing relay identity'}),
  }

  async run(): Promise<Record<string, unknown>> {
    const client = await relayClientFor(this.home, this.mqConfig(), this.flags, this.logger, {register: true})
    try {
      const suite = suiteFromFlag(this.flags.compat)
      if (suite === 'messageu') this.note('warning: --compat messageu uses weak crypto (RSA-1024, OAEP-SHA-1, AES-128-CBC with a zero IV)')
      const r = await client.register(this.args.name, suite, {bits: this.flags.bits, force: this.flags.force})
      const out = {...r, relay: `${client.address.host}:${client.address.port}`}
      if (!this.jsonEnabled()) this.out(`registered ${r.name} with client id ${r.clientId} (${r.suite}, protocol v${r.protocol})`)
      return out
    } finally {
      client.close()
    }
  }
}
