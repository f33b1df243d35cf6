import {Args} from '@oclif/core'

import {connectBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {checkIdentityName, publishIdentity} from '../../lib/crypto/index.js'
import {loadIdentity} from '../../lib/pki/index.js'

export default class KeysPublish extends MqCommand<typeof KeysPublish> {
  static args = {name: Args.string({description: 'identity made here with mq keygen', required: true})}
  static description = `Put an end-to-end identity's certificates into the broker's key directory

Senders anywhere can then encrypt to NAME with mq send --to NAME. Only the CA-signed public certificates are published (keys/NAME.crt and keys/NAME.sign.crt); senders verify them against the CA and CRL before use, so the directory itself is not trusted. Run it again after mq keygen NAME --force.`

  static examples = ['<%= config.bin %> keys publish bob', '<%= config.bin %> keys publish bob --identity bob --json']
  static flags = {...brokerFlags}

  async run(): Promise<{name: string; fingerprint: string}> {
    const config = this.mqConfig()
    // a missing or untrusted local identity is reported before any connection is made
    loadIdentity(this.home, checkIdentityName(this.args.name))
    const client = await connectBroker(this.home, config, {broker: this.flags.broker, identity: this.flags.identity, timeoutMs: this.flags.timeout})
    try {
      const id = await publishIdentity(this.home, client, this.args.name)
      if (!this.jsonEnabled()) this.out(`published ${id.name} ${id.fingerprint}`)
      return {fingerprint: id.fingerprint, name: id.name}
    } finally {
      await client.close().catch(() => {})
    }
  }
}
