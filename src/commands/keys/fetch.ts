import {Args} from '@oclif/core'

import {connectBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {IdentityResolver, cachedCertFiles} from '../../lib/crypto/index.js'

export default class KeysFetch extends MqCommand<typeof KeysFetch> {
  static args = {name: Args.string({description: 'identity to fetch', required: true})}
  static description = `Fetch an identity's certificates from the broker's key directory, verify them and cache them

The certificates are checked against the CA, the CRL and the name before they are written to $MQ_HOME/keys/cache/. mq send and mq recv do this on demand; use this to refresh a cache after a key rotation.`

  static examples = ['<%= config.bin %> keys fetch bob']
  static flags = {...brokerFlags}

  async run(): Promise<{name: string; fingerprint: string; source: string; files: {encCert: string; signCert: string}}> {
    const config = this.mqConfig()
    const client = await connectBroker(this.home, config, {broker: this.flags.broker, identity: this.flags.identity, timeoutMs: this.flags.timeout})
    try {
      const id = await new IdentityResolver(this.home, client).resolve(this.args.name, {refresh: true})
      const files = cachedCertFiles(this.home, id.name)
      if (!this.jsonEnabled()) this.out(`${id.name} ${id.fingerprint} (${id.source})`)
      return {files, fingerprint: id.fingerprint, name: id.name, source: id.source}
    } finally {
      await client.close().catch(() => {})
    }
  }
}
