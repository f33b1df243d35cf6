import {readFileSync} from 'node:fs'

import {Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {describeCert, openCa, passphraseFlag} from '../../lib/cli/pki.js'
import {MqError, NotFoundError} from '../../lib/errors.js'
import type {CertRecord} from '../../lib/pki/index.js'
import {writeFileAtomic} from '../../lib/util/fs.js'

export default class CertSign extends MqCommand<typeof CertSign> {
  static summary = 'Issue a certificate for a key that never leaves its host, from a PEM certificate request (CSR).'
  static description = `Issue a server or client certificate for the key of a PKCS#10 request (PEM): the private key stays on the host that
made the request. The request's signature must verify, it may not ask for a CA (basicConstraints CA:true is refused,
E_CSR_CA), and its key must be RSA of 2048 bits or more. The certificate's name is --name, else the request's CN; a
server certificate gets --san, else the request's SANs, else localhost/127.0.0.1/::1. The certificate goes to
pki/issued/NAME.crt (no key there) and to --out. A file that is not a PEM request is E_BAD_PEM (exit 65), naming it.`
  static examples = [
    'openssl req -new -newkey rsa:2048 -nodes -subj /CN=sensor-7 -keyout sensor-7.key -out sensor-7.csr   # on the sensor',
    '<%= config.bin %> cert sign --csr sensor-7.csr --type client --out sensor-7.crt',
    '<%= config.bin %> cert sign --csr edge.csr --name edge-broker --type server --san DNS:edge.internal --json',
  ]
  static flags = {
    ...passphraseFlag,
    csr: Flags.string({description: 'the certificate request, PEM (-----BEGIN CERTIFICATE REQUEST-----)', required: true}),
    name: Flags.string({description: "certificate name: the subject CN and the identity servers see [default: the request's CN]"}),
    type: Flags.option({default: 'client' as const, description: 'certificate type', options: ['server', 'client'] as const})(),
    san: Flags.string({description: 'subject alternative name DNS:<host> or IP:<addr> (servers)', multiple: true}),
    days: Flags.integer({description: 'validity in days [default: pki.cert_days]'}),
    out: Flags.string({description: 'also write the certificate (PEM) to this file'}),
    force: Flags.boolean({description: 'issue for a name that has a certificate (the old one is revoked as superseded)'}),
  }

  async run(): Promise<CertRecord & {csr: string; out?: string}> {
    const f = this.flags
    let pem: string
    try {
      pem = readFileSync(f.csr, 'utf8')
    } catch (error) {
      throw new NotFoundError('E_NOT_FOUND', `cannot read --csr ${f.csr}: ${(error as Error).message}`, {hint: 'Try this: check the path of the request file'})
    }
    const {certPem, ...rec} = await openCa(this.home, this.mqConfig(), f['passphrase-file']).signRequest(pem, f.csr, {days: f.days, force: f.force, name: f.name, sans: f.san, type: f.type})
    if (f.out) writeFileAtomic(f.out, certPem, 0o644)
    if (!this.jsonEnabled()) {
      this.out(describeCert(rec))
      if (f.out) this.note(`certificate written to ${f.out}`)
    }
    return {...rec, csr: f.csr, ...(f.out ? {out: f.out} : {})}
  }
}
