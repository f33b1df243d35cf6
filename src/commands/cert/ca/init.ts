import {Flags} from '@oclif/core'

import {MqCommand} from '../../../lib/cli/base-command.js'
import {describeCert, openCa, passphraseFlag} from '../../../lib/cli/pki.js'
import type {CertRecord} from '../../../lib/pki/index.js'

export default class CertCaInit extends MqCommand<typeof CertCaInit> {
  static description = 'Create the certificate authority (RSA-3072, SHA-256) in $MQ_HOME/pki, with an empty CRL'
  static examples = ['<%= config.bin %> cert ca init', '<%= config.bin %> cert ca init --cn "Acme messaging CA" --days 1825']
  static flags = {
    ...passphraseFlag,
    cn: Flags.string({description: 'subject common name [default: pki.ca_cn]'}),
    days: Flags.integer({description: 'validity in days [default: pki.ca_days]'}),
    force: Flags.boolean({description: 'replace an existing CA (everything it issued stops being trusted)'}),
  }

  async run(): Promise<CertRecord> {
    const config = this.mqConfig()
    const spin = this.spinner('Generating the CA key').start()
    try {
      const rec = await openCa(this.home, config, this.flags['passphrase-file']).init({cn: this.flags.cn, days: this.flags.days, force: this.flags.force})
      spin.succeed(`Certificate authority created in ${this.home.pki}`)
      if (!this.jsonEnabled()) this.out(describeCert(rec))
      return rec
    } catch (error) {
      spin.stop()
      throw error
    }
  }
}
