import {Flags} from '@oclif/core'

import {type MessageView, apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'
import {MESSAGE_STATUSES} from '../../lib/records/store.js'

export default class MessageList extends MqCommand<typeof MessageList> {
  static description = 'List ingested messages from the records store, newest first (admin identity; no plaintext: numbers are masked)'
  static examples = ['<%= config.bin %> message list', '<%= config.bin %> message list --client alice --status delivered --limit 50', '<%= config.bin %> message list --status failed --json']
  static flags = {
    ...apiFlags,
    client: Flags.string({description: 'only messages of this client identity'}),
    status: Flags.option({description: 'only messages in this status', options: MESSAGE_STATUSES})(),
    limit: Flags.integer({default: 50, description: 'at most this many', max: 10_000, min: 1}),
  }

  async run(): Promise<MessageView[]> {
    const f = this.flags
    const rows = await withAdminApi(this.home, this.mqConfig(), f, (a) => a.messages({client: f.client, limit: f.limit, status: f.status}))
    if (!this.jsonEnabled()) this.out(table(rows as unknown as Record<string, unknown>[], ['message_id', 'client_id', 'sender', 'status', 'attempts', 'queued_at', 'delivered_at']))
    return rows
  }
}
