import {Args, Flags} from '@oclif/core'
import {durationFlag} from '../../lib/cli/duration-flag.js'

import {withBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class QueueDeclare extends MqCommand<typeof QueueDeclare> {
  static args = {name: Args.string({description: 'queue name', required: true})}
  static summary = 'Declare a queue (durable by default; --transient for memory only)'
  static description = 'Declare a queue (idempotent for the same settings; different settings for an existing queue fail with E_QUEUE_MISMATCH): queues are durable by default (kept with their bindings and messages on disk across restarts, like the exchanges); --transient for one that lives in memory only'
  static examples = ['<%= config.bin %> queue declare orders --dead-letter orders.dlq', '<%= config.bin %> queue declare scratch --transient', '<%= config.bin %> queue declare cache --ttl 60s --max-length 10000']
  static flags = {
    ...brokerFlags,
    durable: Flags.boolean({description: 'store the queue and its messages in $MQ_HOME/data (survives kill -9) [default: on]', exclusive: ['transient']}),
    transient: Flags.boolean({description: 'keep the queue and its messages in memory only: gone after a broker restart', exclusive: ['durable']}),
    'dead-letter': Flags.string({description: 'queue that receives rejected, expired and over-delivered messages (created if missing)'}),
    ttl: durationFlag({description: 'message time-to-live: 500ms, 60s, 1h'}),
    'max-length': Flags.integer({description: 'maximum ready messages; the oldest is dropped (or dead-lettered) beyond it', min: 1}),
  }

  async run(): Promise<{queue: string; durable: boolean}> {
    const f = this.flags
    // durable unless asked otherwise: a README walk-through must find its queues and bindings after a restart
    const durable = !f.transient
    await withBroker(this.home, this.mqConfig(), f, (c) => c.declareQueue(this.args.name, {deadLetter: f['dead-letter'], durable, exact: true, maxLength: f['max-length'], ttlMs: f.ttl}))
    if (!this.jsonEnabled()) this.out(`queue ${this.args.name} declared${durable ? ' (durable)' : ' (transient)'}`)
    return {durable, queue: this.args.name}
  }
}
