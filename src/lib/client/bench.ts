/**
 * `mq bench`: one producer process (this one) and one consumer process (a child running
 * `mq bench --role consumer`) drive a broker. We measure throughput (first publish to last delivery),
 * end-to-end latency (publish to delivery, wall-clock stamps in the body; both processes share the
 * machine's clock) and, with confirms, publish-to-confirm latency. The same harness drives RabbitMQ
 * (amqplib) and NATS core (nats.js) for `--compare`, so the ratios compare like with like.
 */
import {type ChildProcess, spawn} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {performance} from 'node:perf_hooks'
import {createInterface} from 'node:readline'
import {fileURLToPath} from 'node:url'

import type {BrokerClient} from './client.js'
import {Window} from '../util/window.js'

export type BenchMode = 'memory' | 'durable'
export type BenchTargetName = 'mq' | 'rabbitmq' | 'rabbitmq-quorum' | 'nats' | 'nats-js'

export interface BenchSpec {
  mode: BenchMode
  size: number
  messages: number
  /** max unconfirmed publishes and the consumer's prefetch */
  window: number
  /** messages per second; undefined = as fast as possible */
  rate?: number
}

export interface BenchResult {
  target: string
  mode: BenchMode
  size: number
  messages: number
  rate?: number
  seconds: number
  msgsPerSec: number
  mbPerSec: number
  latencyMs: {p50: number; p99: number; p999: number; max: number}
  confirmMs?: {p50: number; p99: number; p999: number; max: number}
  /** CPU (user + system, all threads) per message of the consumer process, from ready to its last message */
  consumerCpuUs?: number
  /** CPU per message of the producer process, from its first publish to the consumer's report */
  producerCpuUs?: number
}

export interface BenchProducer {
  /** confirmed publish (durable mode) */
  publishConfirmed(body: Buffer): Promise<void>
  /** unconfirmed publish; false = wait for drained() */
  publish(body: Buffer): boolean
  drained(): Promise<void>
  close(): Promise<void>
}

export interface BenchConsumer {
  /** start consuming; call ack() for each message in durable mode */
  start(onMessage: (body: Buffer, ack: () => void) => void): Promise<void>
  close(): Promise<void>
}

export interface BenchTarget {
  name: BenchTargetName
  /** creates the queue (or picks the subject) both sides use */
  prepare(spec: BenchSpec): Promise<string>
  producer(spec: BenchSpec, dest: string): Promise<BenchProducer>
  consumer(spec: BenchSpec, dest: string): Promise<BenchConsumer>
  cleanup(dest: string): Promise<void>
}

/** Connection settings a child consumer process needs to rebuild the same target. */
export interface TargetParams {
  target: BenchTargetName
  /** mq: broker HOST:PORT, MQ_HOME and identity; others: their URL */
  url: string
  home?: string
  identity?: string
  /** mq: the consumer's broker when it is not `url` (cluster mode: publish on one node, consume on another) */
  consumerUrl?: string
}

function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

/**
 * The median of repeated runs of one workload on one target: by throughput, or for a paced run
 * (equal throughput by construction) by p99 confirm latency. A median rather than a best run: one
 * lucky scheduling of three processes on two cores says little.
 */
export function medianRun(runs: BenchResult[]): BenchResult | undefined {
  if (runs.length === 0) return undefined
  const key = (r: BenchResult) => (r.rate ? -(r.confirmMs?.p99 ?? r.latencyMs.p99) : r.msgsPerSec)
  const sorted = [...runs].sort((a, b) => key(a) - key(b))
  return sorted[Math.floor((sorted.length - 1) / 2)]
}

const round = (n: number, d = 3) => Math.round(n * 10 ** d) / 10 ** d
/** Of sorted latencies. p99.9 too: at 5,000 msg/s a p99 is one message in 100 (50 a second), the p99.9 says how long the stalls behind it are */
export const percentiles = (sorted: Float64Array) => ({max: round(sorted[sorted.length - 1] ?? 0), p50: round(pct(sorted, 50)), p99: round(pct(sorted, 99)), p999: round(pct(sorted, 99.9))})
const NO_ACK = (): void => {}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
/** wall-clock ms with sub-ms precision, comparable across processes on one machine (timeOrigin is fixed: read once, its getter costs per message) */
const ORIGIN = performance.timeOrigin
const wall = () => ORIGIN + performance.now()

export interface ConsumerReport {
  received: number
  lastAt: number
  latencyMs: {p50: number; p99: number; p999: number; max: number}
  /** CPU microseconds the consumer process used from ready to the last message */
  cpuUs: number
}

/** CPU microseconds this process has used (user + system, all its threads) */
const cpuNow = (): number => {
  const u = process.cpuUsage()
  return u.user + u.system
}

/** The consumer side (run in the child process): counts, acks and measures until `total` arrived. */
export async function runConsumer(target: BenchTarget, spec: BenchSpec, dest: string, ready: () => void, progress?: (n: number) => void): Promise<ConsumerReport> {
  const total = spec.messages
  const lat = new Float64Array(total)
  let received = 0
  let lastAt = 0
  let cpu0 = 0
  let cpuUs = 0
  const c = await target.consumer(spec, dest)
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${received} of ${total} messages arrived within 180 s`)), 180_000)
    c.start((body, ack) => {
      const now = wall()
      if (received < total) lat[received] = now - body.readDoubleLE(0)
      received++
      if (spec.mode === 'durable') ack()
      if (progress && received % 1000 === 0) progress(received)
      if (received === total) {
        cpuUs = cpuNow() - cpu0
        lastAt = now
        clearTimeout(timer)
        resolve()
      }
    }).then(() => {
      cpu0 = cpuNow()
      ready()
    }, reject)
  })
  await c.close()
  lat.sort()
  return {cpuUs, lastAt, latencyMs: percentiles(lat), received}
}

const BIN = fileURLToPath(new URL('../../../../bin/run.js', import.meta.url))

/** what the parent sends a consumer process for each run (one JSON line on its stdin) */
export interface ConsumerRun {
  dest: string
  messages: number
  mode: BenchMode
  window: number
}

/**
 * A consumer process (`mq bench --role consumer`) that serves one run after another, each started by
 * a line on its stdin: the warm-up run then warms the consumer's JIT and heap as it does the
 * producer's (one fresh process per run measured every timed run with a cold consumer, several
 * times the CPU per message of a warm one, on every target alike). It exits when its stdin closes.
 */
export class ConsumerProcess {
  private readonly child: ChildProcess
  private stderr = ''
  private onLine: ((line: string) => void) | undefined
  readonly exited: Promise<number>

  constructor(params: TargetParams) {
    const args = [BIN, 'bench', '--role', 'consumer', '--target', params.target, '--url', params.consumerUrl ?? params.url]
    if (params.home) args.push('--home', params.home)
    if (params.identity) args.push('--identity', params.identity)
    this.child = spawn(process.execPath, [...process.execArgv, ...args], {stdio: ['pipe', 'pipe', 'pipe']})
    // a consumer that died mid-run: its stdin is gone, the exit says why
    this.child.stdin!.on('error', () => {})
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-16_384)))
    createInterface({input: this.child.stdout!}).on('line', (l) => this.onLine?.(l))
    this.exited = new Promise<number>((r) => this.child.once('exit', (code) => r(code ?? 1)))
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  /** Starts one run: resolves once the consumer is ready, with its report to come. */
  async run(dest: string, spec: BenchSpec, progress?: (done: number, total: number) => void): Promise<{report: Promise<ConsumerReport>}> {
    let readyResolve!: () => void
    let reportResolve!: (r: ConsumerReport) => void
    const ready = new Promise<void>((r) => (readyResolve = r))
    const report = new Promise<ConsumerReport>((r) => (reportResolve = r))
    this.onLine = (l) => {
      if (l === 'ready') readyResolve()
      else if (l.startsWith('progress ')) progress?.(Number(l.slice(9)), spec.messages)
      else if (l.startsWith('{')) reportResolve(JSON.parse(l) as ConsumerReport)
    }
    const failed = this.exited.then((code) => Promise.reject(new Error(`consumer process exited (${code}): ${this.stderr.trim().split('\n').slice(-3).join(' ')}`)))
    failed.catch(() => {})
    const cmd: ConsumerRun = {dest, messages: spec.messages, mode: spec.mode, window: spec.window}
    this.child.stdin!.write(JSON.stringify(cmd) + '\n')
    await Promise.race([ready, failed])
    return {report: Promise.race([report, failed])}
  }

  /** Ends it: stdin closes, it exits once its last run is done (killed if it has not within 10 s). */
  async close(): Promise<void> {
    if (!this.alive) return
    this.child.stdin!.end()
    const t = setTimeout(() => this.kill(), 10_000)
    await this.exited
    clearTimeout(t)
  }

  /** A run that failed leaves the consumer waiting for messages that will not come: it cannot serve another. */
  kill(): void {
    if (this.alive) this.child.kill('SIGKILL')
  }
}

/** The consumer process's side: runs each run its stdin names, one after the other, until stdin closes. */
export async function serveConsumerRuns(target: BenchTarget, input: NodeJS.ReadableStream, write: (line: string) => void): Promise<void> {
  for await (const line of createInterface({input})) {
    if (line.trim() === '') continue
    const cmd = JSON.parse(line) as ConsumerRun
    const spec: BenchSpec = {messages: cmd.messages, mode: cmd.mode, size: 0, window: cmd.window}
    const report = await runConsumer(target, spec, cmd.dest, () => write('ready'), (n) => write(`progress ${n}`))
    write(JSON.stringify(report))
  }
}

/**
 * Runs one workload: the consumer process (`consumer`, kept for the next run, or one started for
 * this run alone) consumes, this one produces.
 */
export async function runBench(target: BenchTarget, params: TargetParams, spec: BenchSpec, progress?: (done: number, total: number) => void, consumer?: ConsumerProcess): Promise<BenchResult> {
  const total = spec.messages
  const dest = await target.prepare(spec)
  const own = consumer === undefined
  const cons = consumer ?? new ConsumerProcess(params)
  let producer: BenchProducer | undefined
  let ok = false
  try {
    const {report} = await cons.run(dest, spec, progress)
    producer = await target.producer(spec, dest)
    const conf = spec.mode === 'durable' ? new Float64Array(total) : undefined
    const filler = randomBytes(Math.max(0, spec.size - 8))
    // Confirmed publishes reuse their body once confirmed: a broker confirms only what it has read
    // whole, so no client still needs those bytes (amqplib copies at send; mq's and nats.js's
    // buffered writes are done). `window` + 1 bodies then serve a run on every target alike, where a
    // fresh one per message cost ~300 us of allocation, page faults, copy and GC per MiB in the
    // producer. Unconfirmed publishes keep a fresh body each: a client may still hold it.
    const spare: Buffer[] = []
    const make = () => {
      let b = spare.pop()
      if (b === undefined) {
        b = Buffer.allocUnsafe(Math.max(8, spec.size))
        filler.copy(b, 8)
      }
      b.writeDoubleLE(wall(), 0)
      return b
    }
    const window = new Window(spec.window)
    let confirmed = 0
    let failure: Error | undefined
    const t0 = wall()
    const cpu0 = cpuNow()
    const start0 = performance.now()
    for (let i = 0; i < total && !failure; i++) {
      if (spec.rate) {
        const due = start0 + (i * 1000) / spec.rate
        const now = performance.now()
        if (due > now + 1) await sleep(Math.floor(due - now))
      }
      if (spec.mode === 'durable') {
        await window.acquire()
        const start = performance.now()
        const body = make()
        producer.publishConfirmed(body).then(
          () => {
            if (conf && confirmed < total) conf[confirmed] = performance.now() - start
            confirmed++
            spare.push(body)
            window.release()
          },
          (error: Error) => {
            failure = error
            window.release()
          },
        )
      } else if (!producer.publish(make())) await producer.drained()
    }
    if (failure) throw failure
    const r = await report
    const producerCpu = cpuNow() - cpu0
    ok = true
    const seconds = (r.lastAt - t0) / 1000
    conf?.sort()
    return {
      confirmMs: conf ? percentiles(conf) : undefined,
      consumerCpuUs: round(r.cpuUs / total, 2),
      latencyMs: r.latencyMs,
      mbPerSec: round((total * spec.size) / seconds / 1e6, 2),
      messages: total,
      mode: spec.mode,
      msgsPerSec: Math.round(total / seconds),
      producerCpuUs: round(producerCpu / total, 2),
      rate: spec.rate,
      seconds: round(seconds),
      size: spec.size,
      target: target.name,
    }
  } finally {
    if (!ok) cons.kill()
    else if (own) await cons.close()
    await producer?.close().catch(() => {})
    await target.cleanup(dest).catch(() => {})
  }
}

/** mq: a fresh queue per run (durable or not), consumer prefetch = window. */
export function mqTarget(connect: () => Promise<BrokerClient>): BenchTarget {
  return {
    async cleanup(dest) {
      const c = await connect()
      await c.deleteQueue(dest).catch(() => {})
      await c.close()
    },
    async consumer(spec, dest) {
      const sub = await connect()
      return {
        close: () => sub.close(),
        async start(onMessage) {
          const noAck = spec.mode === 'memory'
          // auto-ack: one shared no-op, not a closure per message
          await sub.consume(dest, {noAck, prefetch: spec.window}, noAck ? (d) => onMessage(d.body, NO_ACK) : (d) => onMessage(d.body, () => sub.ack(d.deliveryTag)))
        },
      }
    },
    name: 'mq',
    async prepare(spec) {
      const dest = `bench.${spec.mode}.${randomBytes(4).toString('hex')}`
      const c = await connect()
      await c.declareQueue(dest, {durable: spec.mode === 'durable'})
      await c.close()
      return dest
    },
    async producer(_spec, dest) {
      const pub = await connect()
      return {
        close: () => pub.close(),
        drained: () => pub.drained(),
        publish: (body) => pub.publishNoConfirm('', dest, body),
        publishConfirmed: async (body) => {
          await pub.publish('', dest, body)
        },
      }
    },
  }
}

/**
 * RabbitMQ through amqplib: durable = durable queue, persistent messages, confirm channel, manual acks.
 * `quorum`: a quorum queue (Raft-replicated, RabbitMQ's answer to losing a node), always durable.
 */
export function rabbitTarget(url: string, opts: {quorum?: boolean} = {}): BenchTarget {
  const withChannel = async <T>(fn: (ch: import('amqplib').Channel) => Promise<T>): Promise<T> => {
    const amqp = await import('amqplib')
    const conn = await amqp.connect(url)
    try {
      return await fn(await conn.createChannel())
    } finally {
      await conn.close().catch(() => {})
    }
  }
  return {
    cleanup: (dest) => withChannel(async (ch) => void (await ch.deleteQueue(dest))),
    async consumer(spec, dest) {
      const amqp = await import('amqplib')
      const conn = await amqp.connect(url)
      const ch = await conn.createChannel()
      await ch.prefetch(spec.window)
      return {
        close: () => conn.close().catch(() => {}),
        async start(onMessage) {
          await ch.consume(dest, (m) => m && onMessage(m.content, () => ch.ack(m)), {noAck: spec.mode === 'memory'})
        },
      }
    },
    name: opts.quorum ? 'rabbitmq-quorum' : 'rabbitmq',
    async prepare(spec) {
      const dest = `mq-bench.${spec.mode}.${randomBytes(4).toString('hex')}`
      if (opts.quorum) await withChannel((ch) => ch.assertQueue(dest, {arguments: {'x-queue-type': 'quorum'}, autoDelete: false, durable: true}))
      else await withChannel((ch) => ch.assertQueue(dest, {autoDelete: false, durable: spec.mode === 'durable'}))
      return dest
    },
    async producer(spec, dest) {
      const amqp = await import('amqplib')
      const conn = await amqp.connect(url)
      const durable = spec.mode === 'durable'
      const ch = durable ? await conn.createConfirmChannel() : await conn.createChannel()
      return {
        close: () => conn.close().catch(() => {}),
        drained: () => new Promise((r) => ch.once('drain', () => r())),
        publish: (body) => ch.sendToQueue(dest, body, {persistent: false}),
        publishConfirmed: (body) =>
          new Promise((resolve, reject) => {
            ;(ch as import('amqplib').ConfirmChannel).sendToQueue(dest, body, {persistent: true}, (err) => (err ? reject(err) : resolve()))
          }),
      }
    },
  }
}

/** NATS core pub/sub (no persistence, no acks): the in-memory reference. */
export function natsTarget(servers: string): BenchTarget {
  return {
    cleanup: async () => {},
    async consumer(_spec, dest) {
      const {connect} = await import('nats')
      const nc = await connect({servers})
      return {
        close: () => nc.drain(),
        async start(onMessage) {
          nc.subscribe(dest, {callback: (_err, m) => onMessage(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength), () => {})})
          await nc.flush()
        },
      }
    },
    name: 'nats',
    prepare: async (spec) => `mq.bench.${spec.mode}.${randomBytes(4).toString('hex')}`,
    async producer(_spec, dest) {
      const {connect} = await import('nats')
      const nc = await connect({servers})
      let sent = 0
      return {
        close: () => nc.drain(),
        drained: () => nc.flush(),
        publish: (body) => {
          nc.publish(dest, body)
          // nats.js buffers without limit: flush every so often to keep memory bounded
          return ++sent % 1000 !== 0
        },
        publishConfirmed: () => Promise.reject(new Error('NATS core has no confirms')),
      }
    },
  }
}

/**
 * NATS JetStream: a file-stored stream per run, publishes awaited for their PubAck, a durable
 * consumer with explicit acks and `window` messages outstanding. (JetStream acknowledges once the
 * message is written, and fsyncs on its own interval, not per message.)
 */
export function jetstreamTarget(servers: string): BenchTarget {
  const open = async () => (await import('nats')).connect({servers})
  const stream = (dest: string) => dest.replaceAll('.', '_')
  return {
    async cleanup(dest) {
      const nc = await open()
      try {
        await (await nc.jetstreamManager()).streams.delete(stream(dest))
      } finally {
        await nc.close()
      }
    },
    async consumer(spec, dest) {
      const nc = await open()
      const js = nc.jetstream()
      const c = await js.consumers.get(stream(dest), 'bench')
      let msgs: Awaited<ReturnType<typeof c.consume>> | undefined
      return {
        async close() {
          // the pull loop's timers keep the process alive until it is stopped
          msgs?.stop()
          await nc.close()
        },
        async start(onMessage) {
          const it = await c.consume({max_messages: spec.window})
          msgs = it
          void (async () => {
            for await (const m of it) onMessage(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength), () => m.ack())
          })()
        },
      }
    },
    name: 'nats-js',
    async prepare(spec) {
      const dest = `mq.bench.js.${spec.mode}.${randomBytes(4).toString('hex')}`
      const {AckPolicy, StorageType} = await import('nats')
      const nc = await open()
      try {
        const jsm = await nc.jetstreamManager()
        await jsm.streams.add({name: stream(dest), storage: StorageType.File, subjects: [dest]})
        await jsm.consumers.add(stream(dest), {ack_policy: AckPolicy.Explicit, durable_name: 'bench', max_ack_pending: spec.window})
      } finally {
        await nc.close()
      }
      return dest
    },
    async producer(_spec, dest) {
      const nc = await open()
      const js = nc.jetstream()
      return {
        close: () => nc.close(),
        drained: () => nc.flush(),
        publish: () => {
          throw new Error('the JetStream target measures confirmed publishes only')
        },
        publishConfirmed: async (body) => {
          await js.publish(dest, body)
        },
      }
    },
  }
}

/** payload bytes one run moves at most: 20,000 messages of 1 MiB would take minutes on every target */
export const RUN_BYTES = 2 ** 30
/** payload bytes in flight at most: a window of 500 messages of 1 MiB is half a GiB in every broker */
export const WINDOW_BYTES = 64 * 2 ** 20

/** The messages and window of a run at this payload size: the same caps for every target. */
export function scaledForSize(size: number, messages: number, window: number): {messages: number; window: number} {
  return {messages: Math.min(messages, Math.max(100, Math.floor(RUN_BYTES / size))), window: Math.min(window, Math.max(8, Math.floor(WINDOW_BYTES / size)))}
}
