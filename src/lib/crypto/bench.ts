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

export async function benchEnvelope(opts: {messages?: number; size?: number; maxMessages?: number} = {}): Promise<EnvelopeBenchResult> {
  const messages = opts.messages ?? 10_000
  const size = opts.size ?? 256
  const enc = generateKeyPairSync('rsa', {modulusLength: 2048})
  const sig = generateKeyPairSync('rsa', {modulusLength: 2048})
  const sealer = new EnvelopeSealer({maxMessages: opts.maxMessages, recipients: [{encPublicKey: enc.publicKey, name: 'bob'}], sender: {name: 'alice', signPrivateKey: sig.privateKey}})
  const opener = new EnvelopeOpener({identity: {encPrivateKey: enc.privateKey, name: 'bob'}, resolveSender: async () => sig.publicKey})
  const payload = Buffer.alloc(size, 0x61)
  const sealed: Buffer[] = []
  let t = process.hrtime.bigint()
  for (let i = 0; i < messages; i++) sealed.push(sealer.seal(payload).envelope)
  const sealNs = Number(process.hrtime.bigint() - t)
  t = process.hrtime.bigint()
  for (const e of sealed) await opener.open(e)
  const openNs = Number(process.hrtime.bigint() - t)
  return {
    keysCreated: sealer.keysCreated,
    messages,
    openPerSec: Math.round((messages * 1e9) / openNs),
    overheadBytes: sealed[0].length - size,
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
}

export interface ThroughputResult {
  size: number
  messages: number
  durable: boolean
  plain: ThroughputRun
  encrypted: ThroughputRun
  /** median encrypted msg/s divided by median plaintext msg/s, same broker, same run */
  ratio: number
  /** msg/s of every round, in order */
  rounds: {plain: number; encrypted: number}[]
  keysCreated: number
  unwraps: number
}

function median(runs: ThroughputRun[]): ThroughputRun {
  return [...runs].sort((a, b) => a.perSec - b.perSec)[Math.floor(runs.length / 2)]
}

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
  opts: {messages?: number; size?: number; durable?: boolean; prefetch?: number; window?: number; maxMessages?: number; rounds?: number},
): Promise<ThroughputResult> {
  const messages = opts.messages ?? 20_000
  const size = opts.size ?? 256
  const durable = opts.durable ?? true
  const enc = generateKeyPairSync('rsa', {modulusLength: 2048})
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
        maxMessages: opts.maxMessages,
        recipients: mode === 'native' ? [{encPublicKey: enc.publicKey, name: 'bench-bob'}] : [],
        routingKey: queue,
        sender: {name: 'bench-alice', signPrivateKey: sig.privateKey},
        window: opts.window ?? 256,
      })
      const receiver = new MessageReceiver({accept: [mode], identity: {encPrivateKey: enc.privateKey, name: 'bench-bob'}, replay, resolveSender: async () => sig.publicKey})
      const payload = randomBytes(size)
      const sink = new DiscardSink()
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
      await replay.close()
      await producer.deleteQueue(queue).catch(() => {})
      if (r.accepted !== n) throw new Error(`bench ${mode}: received ${r.accepted} of ${n} (rejected ${r.rejected})`)
      if (mode === 'native') {
        unwraps = receiver.opener.unwraps
        keysCreated = sender.keysCreated
      }
      return {mbPerSec: Number(((n * size) / seconds / 1e6).toFixed(2)), messages: n, mode, perSec: Math.round(n / seconds), seconds: Number(seconds.toFixed(3))}
    }
    // warm-up (JIT, TLS buffers, SQLite pages), not reported
    await run('plain', Math.min(1000, messages))
    await run('native', Math.min(1000, messages))
    // alternate the two modes so load from other processes hits both alike; report the medians
    const plains: ThroughputRun[] = []
    const encs: ThroughputRun[] = []
    for (let i = 0; i < Math.max(1, opts.rounds ?? 3); i++) {
      plains.push(await run('plain'))
      encs.push(await run('native'))
    }
    const plain = median(plains)
    const encrypted = median(encs)
    return {
      durable,
      encrypted,
      keysCreated,
      messages,
      plain,
      ratio: Number((encrypted.perSec / plain.perSec).toFixed(3)),
      rounds: plains.map((p, i) => ({encrypted: encs[i].perSec, plain: p.perSec})),
      size,
      unwraps,
    }
  } finally {
    await producer.close().catch(() => {})
    await consumer.close().catch(() => {})
    rmSync(scratch, {force: true, recursive: true})
  }

}
