/**
 * In-process cost of the envelope, without a broker: how many messages per second one core
 * seals and opens, next to a plain copy of the same payloads. `mq bench e2e` measures the
 * end-to-end figure through a running broker.
 */
import {generateKeyPairSync, randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {MqHome} from '../config/home.js'
import {cpuSeconds} from '../util/cpu.js'
import {EnvelopeOpener, EnvelopeSealer} from './envelope.js'
import {type ConsumerClient, type LoopDelivery, MessageReceiver, type ReceiveSink, type Received, receiveLoop} from './recv.js'
import {ReplayGuard} from './replay.js'
import {MessageSender, type Publisher} from './send.js'

export interface EnvelopeBenchResult {
  messages: number
  size: number
  sealPerSec: number
  openPerSec: number
  keysCreated: number
  unwraps: number
  overheadBytes: number
}

export async function benchEnvelope(opts: {messages?: number; size?: number; maxMessages?: number; recipients?: number} = {}): Promise<EnvelopeBenchResult> {
  const messages = opts.messages ?? 10_000
  const size = opts.size ?? 256
  const encs = Array.from({length: Math.max(1, opts.recipients ?? 1)}, () => generateKeyPairSync('rsa', {modulusLength: 2048}))
  const sig = generateKeyPairSync('rsa', {modulusLength: 2048})
  const sealer = new EnvelopeSealer({
    maxMessages: opts.maxMessages,
    recipients: encs.map((k, i) => ({encPublicKey: k.publicKey, name: i === 0 ? 'bob' : `r${i}`})),
    sender: {name: 'alice', signPrivateKey: sig.privateKey},
  })
  const opener = new EnvelopeOpener({identity: {encPrivateKey: encs[0].privateKey, name: 'bob'}, resolveSender: async () => sig.publicKey})
  const payload = Buffer.alloc(size, 0x61)
  // keep a bounded ring of envelopes (10,000 of 64 KiB would be 650 MB) and open them round-robin
  const ring: Buffer[] = []
  const keep = Math.min(messages, 256)
  // the first envelope of a key carries the grant, later ones mostly its hash: the receiver learns it first
  await opener.open(sealer.seal(payload).envelope)
  let t = process.hrtime.bigint()
  for (let i = 0; i < messages; i++) ring[i % keep] = sealer.seal(payload).envelope
  const sealNs = Number(process.hrtime.bigint() - t)
  t = process.hrtime.bigint()
  for (let i = 0; i < messages; i++) await opener.open(ring[i % keep])
  const openNs = Number(process.hrtime.bigint() - t)
  return {
    keysCreated: sealer.keysCreated,
    messages,
    openPerSec: Math.round((messages * 1e9) / openNs),
    overheadBytes: ring[0].length - size,
    sealPerSec: Math.round((messages * 1e9) / sealNs),
    size,
    unwraps: opener.unwraps,
  }
}

/** The part of BrokerClient the throughput bench uses. */
export interface BenchClient extends Publisher, ConsumerClient<LoopDelivery> {
  declareQueue(name: string, opts?: {durable?: boolean}): Promise<void>
  deleteQueue(name: string): Promise<{messages: number}>
  close(): Promise<void>
}

export interface ThroughputRun {
  mode: 'plain' | 'native'
  messages: number
  seconds: number
  perSec: number
  mbPerSec: number
  /** CPU time of this process (sender and receiver) per message, microseconds: load-independent */
  cpuUsPerMsg: number
  /** CPU time of the broker process per message, microseconds (when its pid is known) */
  brokerCpuUsPerMsg?: number
}

export interface ThroughputResult {
  size: number
  messages: number
  /** recipients of each encrypted message (the bench receives as the first of them) */
  recipients: number
  durable: boolean
  plain: ThroughputRun
  encrypted: ThroughputRun
  /** median encrypted msg/s divided by median plaintext msg/s, same broker, same run */
  ratio: number
  /** median over rounds of (encrypted msg/s / plaintext msg/s) within the round */
  roundRatio: number
  /** median over rounds of this process's CPU per message, encrypted / plaintext */
  cpuRatio: number
  /** msg/s of every round, in order */
  rounds: {plain: number; encrypted: number}[]
  /**
   * every run, in round order: a median of msg/s hides the spread of CPU per message, which is the figure
   * that tells two builds apart on a loaded machine
   */
  runs: {plain: ThroughputRun[]; encrypted: ThroughputRun[]}
  keysCreated: number
  unwraps: number
}

function median(runs: ThroughputRun[]): ThroughputRun {
  return [...runs].sort((a, b) => a.perSec - b.perSec)[Math.floor(runs.length / 2)]
}

const medianOf = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

class DiscardSink implements ReceiveSink<LoopDelivery> {
  bytes = 0
  write(r: Received): void {
    this.bytes += r.payload.length
  }
  async flush(): Promise<void> {}
}

/**
 * send -> broker -> recv throughput, plaintext then encrypted, through the very code paths of
 * mq send (MessageSender) and mq recv (MessageReceiver + receiveLoop with the replay guard), one
 * producer and one consumer connection. Keys are throwaway RSA-2048 pairs made here (the CA check
 * happens once per recipient per run, so it does not affect throughput).
 */
export async function benchThroughput(
  connect: () => Promise<BenchClient>,
  opts: {messages?: number; size?: number; durable?: boolean; prefetch?: number; window?: number; maxMessages?: number; grantEvery?: number; rounds?: number; recipients?: number; brokerPid?: number},
): Promise<ThroughputResult> {
  const messages = opts.messages ?? 20_000
  const size = opts.size ?? 256
  const durable = opts.durable ?? true
  const recipients = Math.max(1, opts.recipients ?? 1)
  // the receiver is the first recipient; the others only cost the sender (wraps, MACs) and envelope bytes
  const encs = Array.from({length: recipients}, () => generateKeyPairSync('rsa', {modulusLength: 2048}))
  const enc = encs[0]
  const sig = generateKeyPairSync('rsa', {modulusLength: 2048})
  const scratch = mkdtempSync(join(tmpdir(), 'mq-bench-e2e-'))
  const producer = await connect()
  const consumer = await connect()
  let keysCreated = 0
  let unwraps = 0
  try {
    const run = async (mode: 'plain' | 'native', n = messages): Promise<ThroughputRun> => {
      const queue = `bench.e2e.${mode}.${randomBytes(4).toString('hex')}`
      await producer.declareQueue(queue, {durable})
      const replay = await ReplayGuard.open(new MqHome(scratch), `bench-${mode}`)
      const sender = new MessageSender(producer, {
        exchange: '',
        format: mode,
        grantEvery: opts.grantEvery,
        maxMessages: opts.maxMessages,
        recipients: mode === 'native' ? encs.map((k, i) => ({encPublicKey: k.publicKey, name: i === 0 ? 'bench-bob' : `bench-r${i}`})) : [],
        routingKey: queue,
        sender: {name: 'bench-alice', signPrivateKey: sig.privateKey},
        window: opts.window ?? 256,
      })
      const receiver = new MessageReceiver({accept: [mode], identity: {encPrivateKey: enc.privateKey, name: 'bench-bob'}, inPlace: true, replay, resolveSender: async () => sig.publicKey})
      const payload = randomBytes(size)
      const sink = new DiscardSink()
      const cpu0 = process.cpuUsage()
      const broker0 = opts.brokerPid ? (cpuSeconds(opts.brokerPid) ?? undefined) : undefined
      const t0 = process.hrtime.bigint()
      const recv = receiveLoop(consumer, receiver, sink, {count: n, idleTimeoutMs: 30_000, prefetch: opts.prefetch ?? 512, queue})
      const confirms: Promise<unknown>[] = []
      for (let i = 0; i < n; i++) {
        const {done} = await sender.enqueue(payload)
        confirms.push(done)
      }
      await Promise.all(confirms)
      const r = await recv
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9
      const cpu = process.cpuUsage(cpu0)
      const broker1 = opts.brokerPid ? (cpuSeconds(opts.brokerPid) ?? undefined) : undefined
      await replay.close()
      await producer.deleteQueue(queue).catch(() => {})
      if (r.accepted !== n) throw new Error(`bench ${mode}: received ${r.accepted} of ${n} (rejected ${r.rejected})`)
      if (mode === 'native') {
        unwraps = receiver.opener.unwraps
        keysCreated = sender.keysCreated
      }
      return {
        mbPerSec: Number(((n * size) / seconds / 1e6).toFixed(2)),
        messages: n,
        mode,
        perSec: Math.round(n / seconds),
        seconds: Number(seconds.toFixed(3)),
        cpuUsPerMsg: Number(((cpu.user + cpu.system) / n).toFixed(1)),
        ...(broker0 !== undefined && broker1 !== undefined ? {brokerCpuUsPerMsg: Number((((broker1 - broker0) * 1e6) / n).toFixed(1))} : {}),
      }
    }
    // warm-up (JIT, TLS buffers, SQLite pages), not reported
    await run('plain', Math.min(1000, messages))
    await run('native', Math.min(1000, messages))
    // alternate the two modes so load from other processes hits both alike; report the medians
    const plains: ThroughputRun[] = []
    const encRuns: ThroughputRun[] = []
    for (let i = 0; i < Math.max(1, opts.rounds ?? 3); i++) {
      plains.push(await run('plain'))
      encRuns.push(await run('native'))
    }
    const plain = median(plains)
    const encrypted = median(encRuns)
    return {
      durable,
      encrypted,
      keysCreated,
      messages,
      plain,
      ratio: Number((encrypted.perSec / plain.perSec).toFixed(3)),
      // per-round ratios are each measured back to back, so their median resists load swings better
      roundRatio: Number(medianOf(plains.map((p, i) => encRuns[i].perSec / p.perSec)).toFixed(3)),
      cpuRatio: Number(medianOf(plains.map((p, i) => encRuns[i].cpuUsPerMsg / p.cpuUsPerMsg)).toFixed(3)),
      recipients,
      rounds: plains.map((p, i) => ({encrypted: encRuns[i].perSec, plain: p.perSec})),
      runs: {encrypted: encRuns, plain: plains},
      size,
      unwraps,
    }
  } finally {
    await producer.close().catch(() => {})
    await consumer.close().catch(() => {})
    rmSync(scratch, {force: true, recursive: true})
  }

}
