import {Flags} from '@oclif/core'

import {type BenchResult, type BenchSpec, type BenchTarget, ConsumerProcess, RUN_BYTES, type TargetParams, WINDOW_BYTES, jetstreamTarget, medianRun, mqTarget, natsTarget, rabbitTarget, runBench, scaledForSize, serveConsumerRuns} from '../../lib/client/bench.js'
import {type ClusterRun, runClusterBench} from '../../lib/client/cluster-bench.js'
import {connectBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {spawnPrivateBroker} from '../../lib/client/spawn.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'
import {MqHome} from '../../lib/config/home.js'
import {MqError, errorText} from '../../lib/errors.js'

interface Ratio {
  mode: string
  size: number
  against: string
  metric: string
  mq: number
  other: number
  ratio: number
}

export default class Bench extends MqCommand<typeof Bench> {
  static description = `Benchmark the broker with one producer process and one consumer process: throughput and latency percentiles.
Modes: memory (non-durable queue, unconfirmed publishes, auto-ack) and durable (durable queue, publisher confirms,
manual acks), plus a durable run paced at --latency-rate msg/s for confirm and end-to-end latency. With --compare the
same workload runs through amqplib against RabbitMQ and through nats.js against NATS core, and the ratios are printed.
Without a reachable broker it starts a private one in a temp home.`
  static examples = ['<%= config.bin %> bench', '<%= config.bin %> bench --compare --json', '<%= config.bin %> bench --compare --messages 300000 --repeat 5', '<%= config.bin %> bench --mode durable --size 256 --size 65536 --messages 5000']
  static flags = {
    ...brokerFlags,
    mode: Flags.option({default: 'all' as const, description: 'which workloads', options: ['memory', 'durable', 'all'] as const})(),
    size: Flags.integer({description: 'payload bytes (repeatable) [default: 256]', max: 64 * 1024 * 1024, min: 8, multiple: true}),
    messages: Flags.integer({default: 20_000, description: `messages per run (at most ${RUN_BYTES / 2 ** 30} GiB of payload: fewer for big sizes)`, min: 100}),
    window: Flags.integer({default: 500, description: `unconfirmed publishes in flight and consumer prefetch (at most ${WINDOW_BYTES / 2 ** 20} MiB of payload: smaller for big sizes)`, min: 1, max: 10_000}),
    'latency-rate': Flags.integer({default: 5000, description: 'msg/s of the paced durable latency run (0 = skip)', min: 0}),
    compare: Flags.boolean({description: 'also run RabbitMQ (amqplib) and NATS core (nats.js) and print ratios'}),
    'rabbitmq-url': Flags.string({default: 'amqp://guest:guest@127.0.0.1:5672', description: 'RabbitMQ for --compare'}),
    nats: Flags.string({default: '127.0.0.1:4222', description: 'NATS server for --compare'}),
    spawn: Flags.boolean({description: 'always benchmark a private broker started for this run'}),
    cluster: Flags.boolean({description: 'cluster mode: durable runs on 1 and on 3 private brokers sharing a private redis-server (AOF always); with --compare, RabbitMQ quorum queues and NATS JetStream'}),
    repeat: Flags.integer({default: 1, description: 'timed runs of each workload on every target, interleaved; the median run is reported and used for the ratios', min: 1, max: 25}),
    warmup: Flags.integer({default: 20_000, description: 'messages of an untimed run of each unpaced workload before the timed one, on every target (JIT, caches, connections)', min: 0}),
    // internal: the consumer process
    role: Flags.option({hidden: true, options: ['producer', 'consumer'] as const})(),
    target: Flags.option({hidden: true, options: ['mq', 'rabbitmq', 'rabbitmq-quorum', 'nats', 'nats-js'] as const})(),
    url: Flags.string({hidden: true}),
  }

  private targetFor(p: TargetParams): BenchTarget {
    if (p.target === 'rabbitmq') return rabbitTarget(p.url)
    if (p.target === 'rabbitmq-quorum') return rabbitTarget(p.url, {quorum: true})
    if (p.target === 'nats') return natsTarget(p.url)
    if (p.target === 'nats-js') return jetstreamTarget(p.url)
    const config = this.mqConfig()
    const home = p.home ? new MqHome(p.home) : this.home
    return mqTarget(() => connectBroker(home, config, {batchConfirms: true, broker: p.url, identity: p.identity, timeoutMs: this.flags.timeout}))
  }

  async run(): Promise<unknown> {
    const f = this.flags
    if (f.role === 'consumer') {
      const t = this.targetFor({home: this.home.root, identity: f.identity, target: f.target ?? 'mq', url: f.url ?? ''})
      // the runs its stdin names, one after the other (ConsumerProcess)
      return serveConsumerRuns(t, process.stdin, (l) => process.stdout.write(l + '\n'))
    }
    const config = this.mqConfig()
    let home = this.home
    let brokerAddr = f.broker ?? process.env.MQ_BROKER ?? config.client.broker
    let identity = f.identity
    let priv: Awaited<ReturnType<typeof spawnPrivateBroker>> | undefined
    if (f.cluster) {
      // the cluster run starts its own brokers and Redis
    } else if (!f.spawn) {
      try {
        await (await connectBroker(home, config, {broker: brokerAddr, identity, timeoutMs: f.timeout})).close()
      } catch (error) {
        if (!(error instanceof MqError) || !['E_BROKER_UNREACHABLE', 'E_CA_MISSING', 'E_CERT_NOT_FOUND'].includes(error.code)) throw error
        this.note(`No broker reachable (${error.message}); starting a private one for this run.`)
        priv = await spawnPrivateBroker()
      }
    } else priv = await spawnPrivateBroker()
    if (priv) {
      home = new MqHome(priv.home)
      brokerAddr = `127.0.0.1:${priv.port}`
      identity = 'admin'
    }
    const mqParams: TargetParams = {home: home.root, identity, target: 'mq', url: brokerAddr}
    const results: BenchResult[] = []
    const ratios: Ratio[] = []
    const specs: BenchSpec[] = []
    for (const size of f.size ?? [256]) {
      const {messages, window} = scaledForSize(size, f.messages, f.window)
      if (f.mode !== 'durable') specs.push({messages, mode: 'memory', size, window})
      if (f.mode !== 'memory') specs.push({messages, mode: 'durable', size, window})
      if (f.mode !== 'memory' && f['latency-rate'] > 0) {
        specs.push({messages: Math.min(messages, f['latency-rate'] * 10), mode: 'durable', rate: f['latency-rate'], size, window})
      }
    }
    const label = (s: BenchSpec) => `${s.mode} ${s.size} B${s.rate ? ` @${s.rate}/s` : ''}`
    const tty = process.stderr.isTTY === true
    const bar = (name: string, s: BenchSpec) => (done: number, total: number) => {
      if (!tty) return
      const w = 30
      const n = Math.round((done / total) * w)
      process.stderr.write(`\r[${'='.repeat(n)}${' '.repeat(w - n)}] ${String(Math.round((done / total) * 100)).padStart(3)}% ${name} ${label(s)}   `)
    }
    const runs: BenchResult[] = []
    // one consumer process per target, kept from its warm-up run to its last timed run
    const consumers = new Map<string, ConsumerProcess>()
    const consumerFor = (p: TargetParams): ConsumerProcess => {
      const key = JSON.stringify(p)
      let c = consumers.get(key)
      if (!c?.alive) consumers.set(key, (c = new ConsumerProcess(p)))
      return c
    }
    const closeConsumers = async () => {
      await Promise.all([...consumers.values()].map((c) => c.close()))
      consumers.clear()
    }
    const warmupOf = (s: BenchSpec) => (s.rate ? 0 : Math.min(f.warmup, Math.max(100, Math.floor(RUN_BYTES / 4 / s.size))))
    const once = async (p: TargetParams, s: BenchSpec, round: number, name: string = p.target): Promise<BenchResult | undefined> => {
      try {
        // the same warm-up for every target: a JIT-compiled broker is not measured cold against Go and Erlang ones
        const warmup = warmupOf(s)
        if (round === 0 && warmup > 0) await runBench(this.targetFor(p), p, {...s, messages: warmup}, bar(`${name} (warm-up)`, s), consumerFor(p))
        const r = await runBench(this.targetFor(p), p, s, bar(name, s), consumerFor(p))
        if (tty) process.stderr.write('\r\x1b[K')
        const of = f.repeat > 1 ? ` (run ${round + 1}/${f.repeat})` : ''
        this.note(`${name.padEnd(8)} ${label(s).padEnd(22)} ${String(r.msgsPerSec).padStart(8)} msg/s  e2e p50 ${r.latencyMs.p50} ms p99 ${r.latencyMs.p99} ms p99.9 ${r.latencyMs.p999} ms${r.confirmMs ? `  confirm p50 ${r.confirmMs.p50} ms p99 ${r.confirmMs.p99} ms p99.9 ${r.confirmMs.p999} ms` : ''}  cpu/msg consumer ${r.consumerCpuUs} us producer ${r.producerCpuUs} us${of}`)
        runs.push({...r, rate: s.rate})
        return r
      } catch (error) {
        if (tty) process.stderr.write('\r\x1b[K')
        this.note(`${name}: ${label(s)} failed: ${errorText(error)}`)
        return undefined
      }
    }
    if (f.cluster) {
      const durable = specs.filter((s) => s.mode === 'durable')
      const {ratios: cr, runs: cruns} = await runClusterBench({compare: f.compare, log: (l) => this.note(l), nats: f.nats, rabbitUrl: f['rabbitmq-url'], runOnce: (p, s, setup) => once(p, s, 0, setup), specs: durable, warmupOf}).finally(closeConsumers)
      if (!this.jsonEnabled()) {
        this.out(
          table(
            cruns.map((r: ClusterRun) => ({
              confirm_p99_ms: r.confirmMs?.p99 ?? '',
              cores_mq: r.cpu?.mq ?? '',
              cores_redis: r.cpu?.redis ?? '',
              cpu_us_msg_mq: r.cpu?.mqUsPerMsg ?? '',
              cpu_us_msg_redis: r.cpu?.redisUsPerMsg ?? '',
              e2e_p99_ms: r.latencyMs.p99,
              mode: r.mode + (r.rate ? ` @${r.rate}/s` : ''),
              msg_s: r.msgsPerSec,
              setup: r.setup,
              size: r.size,
            })),
            ['setup', 'mode', 'size', 'msg_s', 'e2e_p99_ms', 'confirm_p99_ms', 'cores_mq', 'cores_redis', 'cpu_us_msg_mq', 'cpu_us_msg_redis'],
          ),
        )
        if (cr.length > 0) this.out('\n' + table(cr.map((r) => ({...r})), ['setup', 'mode', 'against', 'metric', 'mq', 'other', 'ratio']))
      }
      return {ratios: cr, results: cruns}
    }
    try {
      for (const s of specs) {
        // rounds interleave the targets so that whatever else the machine does weighs on all of them
        const mineRuns: BenchResult[] = []
        const rabbitRuns: BenchResult[] = []
        const natsRuns: BenchResult[] = []
        for (let round = 0; round < f.repeat; round++) {
          const m = await once(mqParams, s, round)
          if (m) mineRuns.push(m)
          if (!f.compare) continue
          const r = await once({target: 'rabbitmq', url: f['rabbitmq-url']}, s, round)
          if (r) rabbitRuns.push(r)
          if (s.mode !== 'memory') continue
          const n = await once({target: 'nats', url: f.nats}, s, round)
          if (n) natsRuns.push(n)
        }
        const mine = medianRun(mineRuns)
        if (mine) results.push(mine)
        if (!f.compare) continue
        const cmp = (other: BenchResult | undefined) => {
          if (other) results.push(other)
          if (!mine || !other) return
          const mode = label(s)
          if (s.rate) {
            // at a fixed rate throughput is equal by construction: compare p99 latencies (lower is better)
            const a = mine.confirmMs?.p99 ?? mine.latencyMs.p99
            const b = other.confirmMs?.p99 ?? other.latencyMs.p99
            ratios.push({against: other.target, metric: 'p99 confirm ms (ratio other/mq, >1 = mq faster)', mode, mq: a, other: b, ratio: Math.round((b / Math.max(a, 0.001)) * 100) / 100, size: s.size})
          } else {
            ratios.push({against: other.target, metric: 'msg/s (ratio mq/other)', mode, mq: mine.msgsPerSec, other: other.msgsPerSec, ratio: Math.round((mine.msgsPerSec / Math.max(other.msgsPerSec, 1)) * 100) / 100, size: s.size})
          }
        }
        cmp(medianRun(rabbitRuns))
        if (s.mode === 'memory') cmp(medianRun(natsRuns))
      }
    } finally {
      await closeConsumers()
      await priv?.stop()
    }
    if (!this.jsonEnabled()) {
      this.out(
        table(
          results.map((r) => ({
            confirm_p99_ms: r.confirmMs?.p99 ?? '',
            e2e_p50_ms: r.latencyMs.p50,
            e2e_p99_ms: r.latencyMs.p99,
            mb_s: r.mbPerSec,
            mode: r.mode + (r.rate ? ` @${r.rate}/s` : ''),
            msg_s: r.msgsPerSec,
            size: r.size,
            target: r.target,
          })),
          ['target', 'mode', 'size', 'msg_s', 'mb_s', 'e2e_p50_ms', 'e2e_p99_ms', 'confirm_p99_ms'],
        ),
      )
      if (ratios.length > 0) this.out('\n' + table(ratios.map((r) => ({...r})), ['mode', 'against', 'metric', 'mq', 'other', 'ratio']))
    }
    return {broker: priv ? `private (${brokerAddr})` : brokerAddr, ratios, results, ...(f.repeat > 1 ? {runs} : {})}
  }
}
