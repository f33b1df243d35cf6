import {apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import type {RecordsStats} from '../../lib/records/store.js'

const n = (x: number) => x.toLocaleString('en-US')

export default class StatsRecords extends MqCommand<typeof StatsRecords> {
  static description = "Ingest pipeline figures from the records store (the admin statistics): messages total/queued/delivered/failed, last 24 h and 7 days; clients; users"
  static examples = ['<%= config.bin %> stats records', '<%= config.bin %> stats records --json']
  static flags = {...apiFlags}

  async run(): Promise<RecordsStats> {
    const s = await withAdminApi(this.home, this.mqConfig(), this.flags, (a) => a.stats())
    if (!this.jsonEnabled()) {
      this.out(
        [
          'Messages:',
          `  Total: ${n(s.messages.total)}`,
          `  Queued: ${n(s.messages.queued + s.messages.processing)}${s.messages.processing ? ` (retrying ${n(s.messages.processing)})` : ''}`,
          `  Delivered: ${n(s.messages.delivered)}`,
          `  Failed: ${n(s.messages.failed)}`,
          `  Last 24 hours: ${n(s.messages.last_24h)}`,
          `  Last 7 days: ${n(s.messages.last_7d)}`,
          '',
          'Clients:',
          `  Total: ${n(s.clients.total)}`,
          `  Active: ${n(s.clients.active)}`,
          `  Revoked: ${n(s.clients.revoked)}`,
          '',
          'Users:',
          `  Total: ${n(s.users.total)}`,
        ].join('\n'),
      )
    }
    return s
  }
}
