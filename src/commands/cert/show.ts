import {Args} from '@oclif/core'
import {readFileSync} from 'node:fs'

import {MqCommand} from '../../lib/cli/base-command.js'
import {describeCert, openCa} from '../../lib/cli/pki.js'
import type {CertRecord} from '../../lib/pki/index.js'

export default class CertShow extends MqCommand<typeof CertShow> {
  static args = {name: Args.string({description: 'certificate name, or a serial from mq cert list', required: true})}
  static description = 'Show one certificate by name (its active TLS certificate, else the newest) or by serial'
  static examples = ['<%= config.bin %> cert show broker', '<%= config.bin %> cert show alice --json', '<%= config.bin %> cert show 4d97945cfa8fb78f59cc4404aac0f716']

  async run(): Promise<CertRecord & {pem: string}> {
    const config = this.mqConfig()
    const ca = openCa(this.home, config)
    // a serial (as cert list prints it, any case, with or without colons) picks one exact certificate
    const serial = this.args.name.toLowerCase().replaceAll(':', '')
    const rec = (/^[0-9a-f]{8,}$/.test(serial) ? ca.list().find((c) => c.serial === serial) : undefined) ?? ca.get(this.args.name)
    const pem = readFileSync(rec.certPath, 'utf8')
    if (!this.jsonEnabled()) this.out(describeCert(rec))
    return {...rec, pem}
  }
}
