import {Args, Flags} from '@oclif/core'

import {apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {REVOCATION_REASONS} from '../../lib/pki/index.js'

export default class ClientRevoke extends MqCommand<typeof ClientRevoke> {
  static args = {id: Args.string({description: 'client identity (certificate name) or certificate serial', required: true})}
  static summary = "Revoke a client's certificate through the broker's API (CRL, records and audit log)"
  static description = `Revoke a client's certificate through the broker: the CA marks it revoked, publishes a fresh CRL (servers reload it within seconds) and the revocation is recorded in the clients table and audit log

Use this from any machine with an admin certificate. On the machine holding the CA, mq cert revoke does the CA part alone
(also for server certificates, or by serial) without the records and the audit log.`
  static examples = ['<%= config.bin %> client revoke alice --reason key-compromise']
  static flags = {
    ...apiFlags,
    reason: Flags.option({default: 'unspecified', description: 'revocation reason', options: REVOCATION_REASONS})(),
  }

  async run(): Promise<{reason: string; revoked: {identity: string; serial: string}[]}> {
    const r = await withAdminApi(this.home, this.mqConfig(), this.flags, (a) => a.revoke(this.args.id, this.flags.reason))
    if (!this.jsonEnabled()) this.out(r.revoked.map((c) => `revoked ${c.identity} (serial ${c.serial}): ${r.reason}`).join('\n'))
    return r
  }
}
