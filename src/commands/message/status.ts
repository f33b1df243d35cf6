import {Args} from '@oclif/core'

import {withBroker} from '../../lib/client/connect.js'
import type {MessageStatusInfo} from '../../lib/client/client.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {NotFoundError} from '../../lib/errors.js'

export default class MessageStatus extends MqCommand<typeof MessageStatus> {
  static args = {id: Args.string({description: 'message id (as printed on publish)', required: true})}
  static description = 'Show where a message is: sent, delivered, acknowledged, dead-lettered, expired, dropped or purged'
  static examples = ['<%= config.bin %> message status 6f1c...', '<%= config.bin %> message status 6f1c... --json']
  static flags = {...brokerFlags}

  async run(): Promise<MessageStatusInfo> {
    const st = await withBroker(this.home, this.mqConfig(), this.flags, (c) => c.messageStatus(this.args.id))
    if (!st) {
      throw new NotFoundError('E_NOT_FOUND', `the broker has no status for message ${this.args.id}`, {hint: 'Try this: check the id; statuses of non-durable messages are forgotten on broker restart'})
    }
    if (!this.jsonEnabled()) this.out(`${st.messageId}  ${st.status}${st.queue ? `  (queue ${st.queue})` : ''}`)
    return st
  }
}
