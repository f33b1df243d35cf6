import {Args, Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {describeCert, openCa, passphraseFlag} from '../../lib/cli/pki.js'
import type {CertRecord} from '../../lib/pki/index.js'

export default class CertIssue extends MqCommand<typeof CertIssue> {
  static args = {name: Args.string({description: 'certificate name: the subject CN and the identity servers see', required: true})}
  static description = 'Issue a server or client TLS certificate (RSA-2048, SHA-256) signed by the CA'
  static examples = [
    '<%= config.bin %> cert issue broker --type server --san DNS:broker.internal --san IP:10.0.0.5',
    '<%= config.bin %> cert issue alice --type client',
  ]
  static flags = {
    ...passphraseFlag,
    days: Flags.integer({description: 'validity in days [default: pki.cert_days]'}),
    force: Flags.boolean({description: 're-issue a name that exists (the old certificate is revoked as superseded)'}),
    san: Flags.string({description: 'subject alternative name DNS:<host> or IP:<addr> (servers; default localhost, 127.0.0.1, ::1)', multiple: true}),
    type: Flags.option({description: 'certificate type', options: ['server', 'client'] as const, required: true})(),
  }

  async run(): Promise<CertRecord> {
    const config = this.mqConfig()
    const rec = await openCa(this.home, config, this.flags['passphrase-file']).issue(this.args.name, {days: this.flags.days, force: this.flags.force, sans: this.flags.san, type: this.flags.type})
    if (!this.jsonEnabled()) this.out(describeCert(rec))
    return rec
  }
}
