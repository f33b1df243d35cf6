import {Args, Flags} from '@oclif/core'

import {type MessageView, apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class MessageViewCommand extends MqCommand<typeof MessageViewCommand> {
  static args = {id: Args.string({description: 'message id (as returned by the proxy)', required: true})}
  static description = 'Show one ingested message; --decrypt also shows the body and sender number (admin only, written to the audit log first)'
  static examples = ['<%= config.bin %> message view 5b0c...', '<%= config.bin %> message view 5b0c... --decrypt --json']
  static flags = {
    ...apiFlags,
    decrypt: Flags.boolean({description: 'decrypt the body and sender number (audited)'}),
  }

  async run(): Promise<MessageView> {
    const m = await withAdminApi(this.home, this.mqConfig(), this.flags, (a) => a.message(this.args.id, this.flags.decrypt))
    if (!this.jsonEnabled()) {
      const lines = [
        `message:      ${m.message_id}`,
        `client:       ${m.client_id}`,
        `sender:       ${m.sender_number ?? m.sender}`,
        `sender hash:  ${m.sender_hash}`,
        `status:       ${m.status} (attempts ${m.attempts})`,
        `queued:       ${m.queued_at}`,
        `delivered:    ${m.delivered_at ?? '-'}`,
        `last attempt: ${m.last_attempt_at ?? '-'}`,
        ...(m.last_error ? [`last error:   ${m.last_error}`] : []),
        `key version:  ${m.key_version}`,
        ...(m.message_body === undefined ? [] : [`metadata:     ${JSON.stringify(m.metadata ?? {})}`, '', m.message_body]),
      ]
      this.out(lines.join('\n'))
    }
    return m
  }
}
