import {Args, Flags} from '@oclif/core'

import {withBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {type RedriveReport, redrive} from '../../lib/client/redrive.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class QueueRedrive extends MqCommand<typeof QueueRedrive> {
  static args = {queue: Args.string({description: 'the dead-letter queue to empty (e.g. orders.dlq)', required: true})}
  static summary = 'Move dead letters back to the queue they died in (read from their x-death-queue header).'
  static description = `Move the messages of a dead-letter queue back to the queue each one died in (its x-death-queue header), or all to
--to QUEUE. Each is republished with its message id, body and headers (the death headers become x-redriven-from,
x-redriven-reason, x-original-exchange, x-original-routing-key) straight to the queue, and removed from the dead-letter
queue only after the broker confirmed the republish: a crash in between loses nothing but may move a message twice.
A dead letter that was taken from the dead-letter queue before without being removed (a redrive that was interrupted,
a consumer that did not ack, or one an earlier redrive left in place) is moved, flagged with the header
x-redrive-possible-duplicate=1 and listed as a possible duplicate: the flag errs on the side of caution.
mq message status of a moved message names the queue it was moved to. Dead letters without a destination, or
whose queue no longer exists, stay where they are and are listed. Needs consume on the dead-letter queue and publish
on the default exchange.`
  static examples = ['<%= config.bin %> queue redrive orders.dlq', '<%= config.bin %> queue redrive orders.dlq --count 100', '<%= config.bin %> queue redrive payments.failed --to payments-retry --json']
  static flags = {
    ...brokerFlags,
    to: Flags.string({description: 'send every dead letter to this queue instead of the one it died in'}),
    count: Flags.integer({char: 'n', description: 'move at most this many [default: all]', min: 1}),
  }

  async run(): Promise<RedriveReport> {
    const f = this.flags
    const r = await withBroker(this.home, this.mqConfig(), f, (c) => redrive(c, this.args.queue, {count: f.count, to: f.to}))
    if (!this.jsonEnabled()) {
      const per = Object.entries(r.byDestination).map(([q, n]) => `${q} ${n}`).join(', ')
      this.out(`moved ${r.moved} from ${r.queue}${per ? `: ${per}` : ''}`)
      for (const s of r.skipped) this.note(`left in ${r.queue}: ${s.messageId}: ${s.reason}`)
      if (r.possibleDuplicates.length > 0) this.note(`possible duplicates (delivered from ${r.queue} before, flagged x-redrive-possible-duplicate=1): ${r.possibleDuplicates.join(', ')}`)
    }
    return r
  }
}
