import {Flags} from '@oclif/core'

import {type BacklogResult, findRabbitPid, runBacklog} from '../../lib/client/backlog-bench.js'
import {mqTarget, rabbitTarget} from '../../lib/client/bench.js'
import {connectBroker} from '../../lib/client/connect.js'
import {spawnPrivateBroker} from '../../lib/client/spawn.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'
import {MqHome} from '../../lib/config/home.js'
import {errorText} from '../../lib/errors.js'

const mib = (b?: number) => (b ? Math.round(b / 1048576) : '-')

export default class BenchBacklog extends MqCommand<typeof BenchBacklog> {
  static description = `Queues bigger than memory: N messages into a durable queue with no consumer, a restart, then one consumer drains it.
Reports the broker's RSS peak while publishing, after the restart and while draining; publish and drain rates; time from
restart to listening; and the drain rate against an empty durable queue's rate. A private mq broker is started for the
run; RabbitMQ's durable queue runs the same workload in the same run (its RSS is read from /proc when it runs locally; it
is not restarted).`
  static examples = ['<%= config.bin %> bench backlog', '<%= config.bin %> bench backlog --messages 200000 --json']
  static flags = {
    messages: Flags.integer({default: 1_000_000, description: 'messages of the backlog', min: 1000}),
    size: Flags.integer({default: 1024, description: 'payload bytes', min: 8, max: 1024 * 1024}),
    window: Flags.integer({default: 500, description: 'unconfirmed publishes in flight and consumer prefetch', min: 1, max: 10_000}),
    baseline: Flags.integer({default: 100_000, description: 'messages of the empty-queue baseline run', min: 1000}),
    'rabbitmq-url': Flags.string({default: 'amqp://guest:guest@127.0.0.1:5672', description: 'RabbitMQ to compare with'}),
    'no-rabbitmq': Flags.boolean({description: 'skip RabbitMQ'}),
  }

  async run(): Promise<{results: BacklogResult[]}> {
    const f = this.flags
    const config = this.mqConfig()
    let priv = await spawnPrivateBroker()
    const results: BacklogResult[] = []
    const log = (line: string) => this.note(line)
    try {
      const target = mqTarget(() => connectBroker(new MqHome(priv.home), config, {batchConfirms: true, broker: `127.0.0.1:${priv.port}`, identity: 'admin'}))
      results.push(
        await runBacklog(target, {
          baselineMessages: Math.min(f.baseline, f.messages),
          log,
          messages: f.messages,
          pid: () => priv.proc.pid,
          async restart() {
            await priv.stop(true)
            priv = await spawnPrivateBroker({home: priv.home})
            return priv.readyMs
          },
          size: f.size,
          window: f.window,
        }),
      )
    } finally {
      await priv.stop()
    }
    if (!f['no-rabbitmq']) {
      try {
        const pid = findRabbitPid()
        results.push(await runBacklog(rabbitTarget(f['rabbitmq-url']), {baselineMessages: Math.min(f.baseline, f.messages), log, messages: f.messages, pid: () => pid, size: f.size, window: f.window}))
      } catch (error) {
        this.warn(`RabbitMQ at ${f['rabbitmq-url']} could not be measured: ${errorText(error)}`)
      }
    }
    if (!this.jsonEnabled()) {
      this.out(
        table(
          results.map((r) => ({
            drain: r.drain.rate,
            drainRatio: r.drainRatio,
            emptyQueue: r.emptyQueue.rate,
            messages: r.messages,
            publish: r.publish.rate,
            restartEmptyMs: r.restartEmptyMs ?? '-',
            restartMs: r.restartMs ?? '-',
            rssAfterRestartMib: mib(r.rssAfterRestart),
            rssDrainMib: mib(r.drain.rssPeak),
            rssPublishMib: mib(r.publish.rssPeak),
            target: r.target,
          })),
          ['target', 'messages', 'emptyQueue', 'publish', 'drain', 'drainRatio', 'restartEmptyMs', 'restartMs', 'rssPublishMib', 'rssAfterRestartMib', 'rssDrainMib'],
        ),
      )
    }
    return {results}
  }
}
