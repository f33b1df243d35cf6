import {withBroker} from '../../lib/client/connect.js'
import type {QueueStats} from '../../lib/client/client.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'

export default class QueueList extends MqCommand<typeof QueueList> {
  static description = 'List queues with their depth, unacked messages and consumers'
  static examples = ['<%= config.bin %> queue list', '<%= config.bin %> queue list --json']
  static flags = {...brokerFlags}

  async run(): Promise<QueueStats[]> {
    const queues = await withBroker(this.home, this.mqConfig(), this.flags, (c) => c.listQueues())
    // stdout carries data only: an empty list prints nothing there
    if (!this.jsonEnabled() && queues.length === 0) this.note('no queues')
    else if (!this.jsonEnabled()) {
      this.out(table(queues.map((q) => ({...q, durable: q.durable ? 'yes' : 'no', deadLetter: q.deadLetter ?? ''})), ['name', 'durable', 'messages', 'unacked', 'consumers', 'deadLetter']))
    }
    return queues
  }
}
