import {Args, Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {describeCert, openCa, passphraseFlag} from '../../lib/cli/pki.js'
import type {CertRecord} from '../../lib/pki/index.js'

export default class CertRenew extends MqCommand<typeof CertRenew> {
  static args = {name: Args.string({description: 'name of the server or client certificate to renew', required: true})}
  static summary = 'Reissue a certificate for the same name, key, type and SANs with a new validity; the old one is revoked after.'
  static description = `Reissue the active server or client certificate NAME: same subject, same public key (the private key does not move;
one from mq cert sign --csr stays on its host), same type and SANs (or --san), validity from now for --days.
The new certificate is written to the same file and recorded first; only then is the old one revoked as superseded and
the CRL republished. Servers pick both up without a restart, at their next CRL check (broker.crl_check_interval_ms, 2 s):
connections made with an old client certificate are closed and reconnect with the new one; for a server's own
certificate, clients that check the CRL refuse it until the server has reloaded. Run it where the CA key is.`
  static examples = ['<%= config.bin %> cert renew broker', '<%= config.bin %> cert renew alice --days 90', '<%= config.bin %> cert renew broker --san DNS:broker.internal --json']
  static flags = {
    ...passphraseFlag,
    days: Flags.integer({description: 'validity in days from now [default: pki.cert_days]'}),
    san: Flags.string({description: 'replace the SANs of a server certificate: DNS:<host> or IP:<addr> [default: the current ones]', multiple: true}),
    type: Flags.option({description: 'which certificate when NAME has both a server and a client one', options: ['server', 'client'] as const})(),
  }

  async run(): Promise<{renewed: CertRecord; superseded: CertRecord}> {
    const f = this.flags
    const r = await openCa(this.home, this.mqConfig(), f['passphrase-file']).renew(this.args.name, {days: f.days, sans: f.san, type: f.type})
    if (!this.jsonEnabled()) {
      this.out(describeCert(r.renewed))
      this.note(`revoked the previous certificate (serial ${r.superseded.serial}) as superseded; CRL updated: ${this.home.crl}`)
    }
    return r
  }
}
