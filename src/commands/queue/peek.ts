import {Args, Flags} from '@oclif/core'

import {withBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {type PeekView, peekView} from '../../lib/client/peek.js'

export default class QueuePeek extends MqCommand<typeof QueuePeek> {
  static args = {queue: Args.string({description: 'queue name', required: true})}
  static summary = 'Look at the messages at the head of a queue without consuming them.'
  static description = `Show up to --count ready messages from the head of a queue, in order, without taking them.
Unlike rabbitmqadmin get ackmode=ack_requeue_true, nothing about the messages changes: they stay where they are,
are not counted as delivered, are not flagged redelivered, and their status stays "sent". Messages a consumer holds
unacknowledged are not ready and not shown. Needs the right to consume the queue or the monitor right
(the pipeline's delivery queue: its readers and admins only). Bodies are shown as text when they are UTF-8
(mq send bodies are encrypted envelopes), else as base64; --json always gives base64 in "body" and the size in "size".
One answer carries at most 8 MiB of bodies: fewer messages are shown then, and a single bigger body is cut ("truncated").`
  static examples = ['<%= config.bin %> queue peek orders', '<%= config.bin %> queue peek orders.dlq --count 10', '<%= config.bin %> queue peek orders --count 5 --json']
  static flags = {
    ...brokerFlags,
    count: Flags.integer({char: 'n', default: 1, description: 'how many messages to show (1-1000)', max: 1000, min: 1}),
  }

  async run(): Promise<PeekView> {
    const r = await withBroker(this.home, this.mqConfig(), this.flags, (c) => c.peek(this.args.queue, this.flags.count))
    const view = peekView(r)
    if (!this.jsonEnabled()) {
      if (view.messages.length === 0) this.note(`queue ${view.queue} has no ready messages`)
      for (const m of view.messages) {
        const headers = Object.entries(m.headers).map(([k, v]) => `${k}=${v}`).join(' ')
        this.out(`--- ${m.messageId}  exchange=${JSON.stringify(m.exchange)} key=${JSON.stringify(m.routingKey)} at=${new Date(m.timestamp).toISOString()}${m.redelivered ? ` redelivered (${m.deliveryCount} deliveries)` : ''}${headers ? `  ${headers}` : ''}`)
        this.out(m.text ?? `(${m.truncated ? `first ${Buffer.from(m.body, 'base64').length} of ` : 'binary, '}${m.size} bytes, base64) ${m.body}`)
      }
      this.note(`${view.messages.length} of ${view.ready} ready message${view.ready === 1 ? '' : 's'} shown; the queue is unchanged`)
    }
    return view
  }
}
