import {Flags} from '@oclif/core'

import {MqCommand} from '../../../lib/cli/base-command.js'
import {describeCert, openCa, passphraseFlag} from '../../../lib/cli/pki.js'
import type {CertRecord} from '../../../lib/pki/index.js'

export default class CertCaInit extends MqCommand<typeof CertCaInit> {
  static description = `Create the certificate authority (RSA-3072, SHA-256) in $MQ_HOME/pki, with an empty CRL

With a passphrase (--passphrase-file or MQ_CA_PASSPHRASE) the CA key is stored as encrypted PKCS#8: AES-256-CBC under a key derived with scrypt (N=2^14, r=8, p=5: OWASP's equivalent of N=2^17, p=1, within the 32 MiB OpenSSL allows when it reads the key; openssl pkcs8 reads it too). Keys written by older versions (PBKDF2, 2,048 iterations) still load; re-create the CA or re-encrypt them with openssl pkcs8 -topk8 -scrypt to upgrade.`
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
