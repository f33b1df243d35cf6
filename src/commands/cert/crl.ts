import {Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {openCa, passphraseFlag} from '../../lib/cli/pki.js'

export default class CertCrl extends MqCommand<typeof CertCrl> {
  static description = 'Publish the certificate revocation list to $MQ_HOME/pki/crl.pem (PEM "X509 CRL", CRL number incremented)'
  static examples = ['<%= config.bin %> cert crl', '<%= config.bin %> cert crl --days 1 --json']
  static flags = {
    ...passphraseFlag,
    days: Flags.integer({description: 'days until nextUpdate [default: pki.crl_days]'}),
  }

  async run(): Promise<{path: string; number: number; revoked: number; nextUpdate: string}> {
    const config = this.mqConfig()
    const r = await openCa(this.home, config, this.flags['passphrase-file']).publishCrl(this.flags.days)
    if (!this.jsonEnabled()) this.out(`${r.path}: CRL #${r.number}, ${r.revoked} revoked, next update ${r.nextUpdate}`)
    return r
  }
}
