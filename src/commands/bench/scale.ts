import {Flags} from '@oclif/core'

import {findRabbitPid} from '../../lib/client/backlog-bench.js'
import {connectBroker} from '../../lib/client/connect.js'
import {type ScaleResult, mqScaleDriver, rabbitScaleDriver, runScale} from '../../lib/client/scale-bench.js'
import {spawnPrivateBroker} from '../../lib/client/spawn.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'
import {MqHome} from '../../lib/config/home.js'
import {errorText} from '../../lib/errors.js'

const mib = (b?: number) => (b ? Math.round(b / 1048576) : '-')

export default class BenchScale extends MqCommand<typeof BenchScale> {
  static summary = 'Benchmark many objects rather than many messages: queues, idle connections, fan-out consumers'
  static description = `Many objects rather than many messages: N durable queues with bindings (declare rate, RSS, restart time),
N idle authenticated connections (RSS per connection), and one producer fanned out to C consumers through a fanout
exchange (deliveries per second). A private mq broker is started for the run; RabbitMQ runs the same workloads in the
same run (its RSS is read from /proc when it runs locally).`
  static examples = ['<%= config.bin %> bench scale', '<%= config.bin %> bench scale --queues 1000 --connections 1000 --json']
  static flags = {
    queues: Flags.integer({default: 10_000, description: 'durable queues to declare, each bound to a topic exchange', min: 1}),
    connections: Flags.integer({default: 10_000, description: 'idle authenticated connections to open', min: 1, max: 60_000}),
    consumers: Flags.integer({default: 10, description: 'consumers of the fanout exchange (one queue each)', min: 1, max: 1000}),
    messages: Flags.integer({default: 100_000, description: 'messages the producer publishes to the fanout exchange', min: 1}),
    size: Flags.integer({default: 256, description: 'payload bytes of the fanout run', min: 8, max: 1024 * 1024}),
    window: Flags.integer({default: 500, description: 'consumer prefetch of the fanout run', min: 1, max: 10_000}),
    'rabbitmq-url': Flags.string({default: 'amqp://guest:guest@127.0.0.1:5672', description: 'RabbitMQ to compare with'}),
    'no-rabbitmq': Flags.boolean({description: 'skip RabbitMQ'}),
  }

  async run(): Promise<{results: ScaleResult[]}> {
    const f = this.flags
    const config = this.mqConfig()
    const log = (line: string) => this.note(line)
    // the private broker must admit the idle connections (and their handshakes) the run opens
    const env = {MQ_BROKER_MAX_CONNECTIONS: String(f.connections + f.consumers + 64)}
    let priv = await spawnPrivateBroker({env})
    const results: ScaleResult[] = []
    try {
      const connect = () => connectBroker(new MqHome(priv.home), config, {broker: `127.0.0.1:${priv.port}`, identity: 'admin'})
      const driver = mqScaleDriver(connect, () => priv.proc.pid, async () => {
        await priv.stop(true)
        priv = await spawnPrivateBroker({env, home: priv.home})
        return priv.readyMs
      })
      results.push(await runScale(driver, {...f, log}))
    } finally {
      await priv.stop()
    }
    if (!f['no-rabbitmq']) {
      try {
        const pid = findRabbitPid()
        results.push(await runScale(rabbitScaleDriver(f['rabbitmq-url'], () => pid), {...f, log}))
      } catch (error) {
        this.warn(`RabbitMQ at ${f['rabbitmq-url']} could not be measured: ${errorText(error)}`)
      }
    }
    if (!this.jsonEnabled()) {
      this.out(
        table(
          results.map((r) => ({
            connKib: Math.round(r.connections.bytesPerConnection / 1024),
            connPerSec: r.connections.perSec,
            declarePerSec: r.queues.perSec,
            fanoutPerSec: r.fanout.deliveredPerSec,
            queueRssMib: mib(r.queues.rssAfter),
            restartMs: r.queues.restartMs ?? '-',
            target: r.target,
          })),
          ['target', 'declarePerSec', 'queueRssMib', 'restartMs', 'connPerSec', 'connKib', 'fanoutPerSec'],
        ),
      )
      const [m, o] = results
      if (m && o) this.out(`fanout deliveries/s mq/rabbitmq: ${(m.fanout.deliveredPerSec / o.fanout.deliveredPerSec).toFixed(2)}x; RSS per idle connection mq/rabbitmq: ${(m.connections.bytesPerConnection / o.connections.bytesPerConnection).toFixed(2)}x`)
    }
    return {results}
  }
}
