import {Flags} from '@oclif/core'

import {apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'
import type {AuditRecord} from '../../lib/records/store.js'

export default class AuditList extends MqCommand<typeof AuditList> {
  static description = 'The audit log of the records store, newest first: admin actions (portal and API), decrypts, logins'
  static examples = ['<%= config.bin %> audit list', '<%= config.bin %> audit list --type message.decrypt --json']
  static flags = {
    ...apiFlags,
    limit: Flags.integer({default: 100, description: 'rows', max: 10_000, min: 1}),
    type: Flags.string({description: 'only this event type, e.g. user.create, cert.issue, message.decrypt, auth.login_failed'}),
    actor: Flags.string({description: 'only events by this actor (user e-mail or certificate identity)'}),
  }

  async run(): Promise<AuditRecord[]> {
    const events = await withAdminApi(this.home, this.mqConfig(), this.flags, (a) => a.audit({actor: this.flags.actor, limit: this.flags.limit, type: this.flags.type}))
    if (!this.jsonEnabled()) this.out(table(events, ['created_at', 'event_type', 'actor', 'identity', 'ip', 'severity', 'event_data']))
    return events
  }
}
