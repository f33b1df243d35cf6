import {Args, Flags} from '@oclif/core'

import {MqCommand} from '../lib/cli/base-command.js'
import {openCa, passphraseFlag} from '../lib/cli/pki.js'
import {identityFiles} from '../lib/pki/index.js'

export default class Keygen extends MqCommand<typeof Keygen> {
  static args = {name: Args.string({description: 'identity name (who messages are encrypted to and signed by)', required: true})}
  static description = `Create an end-to-end identity: an RSA-OAEP decryption key and an RSA-PSS signing key, both certified by the CA

Files: $MQ_HOME/keys/NAME.key, NAME.pub, NAME.crt (encryption) and NAME.sign.key, NAME.sign.crt (signing). Private keys are 0600. Senders check these certificates against the CA and CRL before encrypting, so no server can substitute a key.`
  static examples = ['<%= config.bin %> keygen alice', '<%= config.bin %> keygen alice --force --json']
  static flags = {
    ...passphraseFlag,
    force: Flags.boolean({description: 'replace an existing identity (the old certificates are revoked as superseded)'}),
  }

  async run(): Promise<{name: string; fingerprint: string; files: Record<string, string>}> {
    const config = this.mqConfig()
    const spin = this.spinner(`Generating keys for ${this.args.name}`).start()
    try {
      const id = await openCa(this.home, config, this.flags['passphrase-file']).keygen(this.args.name, {force: this.flags.force})
      spin.stop()
      const files = identityFiles(this.home, id.name)
      if (!this.jsonEnabled()) this.out(`${id.name} ${id.fingerprint}`)
      return {files, fingerprint: id.fingerprint, name: id.name}
    } catch (error) {
      spin.stop()
      throw error
    }
  }
}
