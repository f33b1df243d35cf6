import {Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {openCa} from '../../lib/cli/pki.js'
import {table} from '../../lib/cli/table.js'
import type {CertRecord} from '../../lib/pki/index.js'

export default class CertList extends MqCommand<typeof CertList> {
  static description = 'List issued certificates with their status (active, revoked, expired)'
  static examples = ['<%= config.bin %> cert list', '<%= config.bin %> cert list --status revoked --json']
  static flags = {
    status: Flags.option({description: 'only this status', options: ['active', 'revoked', 'expired'] as const})(),
    type: Flags.option({description: 'only this type', options: ['server', 'client', 'e2e-enc', 'e2e-sign'] as const})(),
  }

  async run(): Promise<CertRecord[]> {
    const config = this.mqConfig()
    const certs = openCa(this.home, config)
      .list()
      .filter((c) => (!this.flags.status || c.status === this.flags.status) && (!this.flags.type || c.type === this.flags.type))
    // stdout carries data only: an empty list prints nothing there
    if (!this.jsonEnabled() && certs.length === 0) this.note('no certificates')
    else if (!this.jsonEnabled()) this.out(table(certs.map((c) => ({name: c.name, type: c.type, serial: c.serial, 'not-after': c.notAfter.slice(0, 10), status: c.status}))))
    return certs
  }
}
