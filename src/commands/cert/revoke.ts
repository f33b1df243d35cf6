import {Args, Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {openCa, passphraseFlag} from '../../lib/cli/pki.js'
import {table} from '../../lib/cli/table.js'
import {type CertRecord, REVOCATION_REASONS} from '../../lib/pki/index.js'

export default class CertRevoke extends MqCommand<typeof CertRevoke> {
  static args = {target: Args.string({description: 'certificate name (revokes all its active certificates, TLS and end-to-end) or serial', required: true})}
  static description = `Revoke certificates and republish the CRL (servers pick it up without a restart)

Use this on the machine holding the CA (pki/ca.key), for any certificate: servers, clients, by name or serial.
For a client of a running broker from another machine, use mq client revoke: it goes through the broker's API
(admin certificate), revokes with the broker's CA and also marks the client revoked in the records and the audit log.`
  static examples = ['<%= config.bin %> cert revoke alice --reason key-compromise', '<%= config.bin %> cert revoke 4f1c0d2e9a7b6c5d4e3f2a1b0c9d8e7f']
  static flags = {
    ...passphraseFlag,
    reason: Flags.option({default: 'unspecified', description: 'revocation reason', options: REVOCATION_REASONS})(),
  }

  async run(): Promise<{revoked: CertRecord[]}> {
    const config = this.mqConfig()
    const revoked = await openCa(this.home, config, this.flags['passphrase-file']).revoke(this.args.target, this.flags.reason)
    if (!this.jsonEnabled()) {
      this.out(table(revoked.map((c) => ({name: c.name, reason: c.reason, serial: c.serial, type: c.type}))))
      this.note(`CRL updated: ${this.home.crl}`)
    }
    return {revoked}
  }
}
