import {Args} from '@oclif/core'
import {readFileSync} from 'node:fs'

import {MqCommand} from '../../lib/cli/base-command.js'
import {describeCert, openCa} from '../../lib/cli/pki.js'
import type {CertRecord} from '../../lib/pki/index.js'

export default class CertShow extends MqCommand<typeof CertShow> {
  static args = {name: Args.string({description: 'certificate name', required: true})}
  static description = 'Show one certificate (its active TLS certificate, else the newest)'
  static examples = ['<%= config.bin %> cert show broker', '<%= config.bin %> cert show alice --json']

  async run(): Promise<CertRecord & {pem: string}> {
    const config = this.mqConfig()
    const rec = openCa(this.home, config).get(this.args.name)
    const pem = readFileSync(rec.certPath, 'utf8')
    if (!this.jsonEnabled()) this.out(describeCert(rec))
    return {...rec, pem}
  }
}
