import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'
import {relayClientFlags, relayClientFor} from '../../lib/relay/cli.js'

export default class RelayUsers extends MqCommand<typeof RelayUsers> {
  static description = 'List the users registered on the relay (everyone but you)'
  static examples = ['<%= config.bin %> relay users', '<%= config.bin %> relay users --json']
  static flags = {...relayClientFlags}

  async run(): Promise<{users: {name: string; id: string}[]}> {
    const client = await relayClientFor(this.home, this.mqConfig(), this.flags, this.logger)
    try {
      const users = await client.users()
      // stdout carries data only: an empty list prints nothing there
      if (!this.jsonEnabled() && users.length === 0) this.note('no other users on the relay')
      else if (!this.jsonEnabled()) this.out(table(users, ['name', 'id']))
      return {users}
    } finally {
      client.close()
    }
  }
}
