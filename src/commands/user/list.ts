import {apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'

export default class UserList extends MqCommand<typeof UserList> {
  static description = 'List operator/portal users of the records store'
  static examples = ['<%= config.bin %> user list --json']
  static flags = {...apiFlags}

  async run(): Promise<unknown[]> {
    const users = await withAdminApi(this.home, this.mqConfig(), this.flags, (a) => a.users())
    if (!this.jsonEnabled()) this.out(table(users, ['id', 'email', 'role', 'client_id', 'active', 'created_at', 'last_login_at']))
    return users
  }
}
