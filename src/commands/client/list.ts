import {Flags} from '@oclif/core'

import {apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'
import {CLIENT_STATUSES, type ClientRecord} from '../../lib/records/store.js'

export default class ClientList extends MqCommand<typeof ClientList> {
  static description = 'List client certificates known to the broker (from the CA and from clients seen by the proxy)'
  static examples = ['<%= config.bin %> client list', '<%= config.bin %> client list --status revoked --json']
  static flags = {
    ...apiFlags,
    status: Flags.option({description: 'only clients in this status', options: CLIENT_STATUSES})(),
  }

  async run(): Promise<ClientRecord[]> {
    const rows = await withAdminApi(this.home, this.mqConfig(), this.flags, (a) => a.clients(this.flags.status))
    if (!this.jsonEnabled()) this.out(table(rows as unknown as Record<string, unknown>[], ['identity', 'serial', 'status', 'issued_at', 'expires_at', 'revoked_at', 'reason', 'last_seen_at']))
    return rows
  }
}
