/**
 * `mq bench`: one producer and one consumer connection drive a broker and we measure throughput
 * (first publish to last delivery) and end-to-end latency (publish to delivery, timestamps taken
 * in this one process) plus, with confirms, publish-to-confirm latency. The same harness drives
 * RabbitMQ (amqplib) and NATS core (nats.js) for `--compare`, so the ratios compare like with like.
 */
import {randomBytes} from 'node:crypto'
import {performance} from 'node:perf_hooks'

import type {BrokerClient} from './client.js'

export type BenchMode = 'memory' | 'durable'

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
  latencyMs: {p50: number; p99: number; max: number}
  confirmMs?: {p50: number; p99: number}
}

/** What the harness needs from a broker: a consumer, and a publisher with or without confirms. */
export interface BenchTransport {
  name: string
  /** start consuming; call ack() for each message in durable mode */
  consume(onMessage: (body: Buffer, ack: () => void) => void): Promise<void>
  /** confirmed publish (durable mode) */
  publishConfirmed(body: Buffer): Promise<void>
  /** unconfirmed publish; false = wait for drained() */
  publish(body: Buffer): boolean
  drained(): Promise<void>
  close(): Promise<void>
}

function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

const round = (n: number, d = 3) => Math.round(n * 10 ** d) / 10 ** d
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export async function runBench(t: BenchTransport, spec: BenchSpec, progress?: (done: number, total: number) => void): Promise<BenchResult> {
  const {messages: total, size} = spec
  const lat = new Float64Array(total)
  const conf = spec.mode === 'durable' ? new Float64Array(total) : undefined
  let received = 0
  let confirmed = 0
  let lastProgress = 0
  let t0 = 0
  let finish!: () => void
  let fail!: (e: Error) => void
  const done = new Promise<void>((res, rej) => {
    finish = res
    fail = rej
  })
  await t.consume((body, ack) => {
    const sent = body.readDoubleLE(0)
    if (received < total) lat[received] = performance.now() - sent
    received++
    if (spec.mode === 'durable') ack()
    if (progress && received - lastProgress >= 1000) {
      lastProgress = received
      progress(received, total)
    }
    if (received === total) finish()
  })
  const filler = randomBytes(Math.max(0, size - 8))
  const make = () => {
    const b = Buffer.allocUnsafe(Math.max(8, size))
    filler.copy(b, 8)
    b.writeDoubleLE(performance.now(), 0)
    return b
  }
  t0 = performance.now()
  let inflight = 0
  let wake: (() => void) | undefined
  const onConfirm = (start: number) => () => {
    if (conf && confirmed < total) conf[confirmed] = performance.now() - start
    confirmed++
    inflight--
    if (wake) {
      const w = wake
      wake = undefined
      w()
    }
  }
  for (let i = 0; i < total; i++) {
    if (spec.rate) {
      const due = t0 + (i * 1000) / spec.rate
      const now = performance.now()
      if (due > now + 1) await sleep(Math.floor(due - now))
    }
    if (spec.mode === 'durable') {
      while (inflight >= spec.window) await new Promise<void>((r) => (wake = r))
      inflight++
      const start = performance.now()
      t.publishConfirmed(make()).then(onConfirm(start), (e: Error) => fail(e))
    } else if (!t.publish(make())) await t.drained()
  }
  const timeout = setTimeout(() => fail(new Error(`only ${received} of ${total} messages arrived within 120 s`)), 120_000)
  try {
    await done
  } finally {
    clearTimeout(timeout)
  }
  const seconds = (performance.now() - t0) / 1000
  lat.sort()
  conf?.sort()
  return {
    confirmMs: conf ? {p50: round(pct(conf, 50)), p99: round(pct(conf, 99))} : undefined,
    latencyMs: {max: round(lat[lat.length - 1] ?? 0), p50: round(pct(lat, 50)), p99: round(pct(lat, 99))},
    mbPerSec: round((total * size) / seconds / 1e6, 2),
    messages: total,
    mode: spec.mode,
    msgsPerSec: Math.round(total / seconds),
    rate: spec.rate,
    seconds: round(seconds),
    size,
    target: t.name,
  }
}

/** mq: a fresh queue per run (durable or not), consumer prefetch = window. */
export async function mqTransport(connect: () => Promise<BrokerClient>, spec: BenchSpec): Promise<BenchTransport> {
  const pub = await connect()
  const sub = await connect()
  const queue = `bench.${spec.mode}.${randomBytes(4).toString('hex')}`
  await pub.declareQueue(queue, {durable: spec.mode === 'durable'})
  return {
    async close() {
      await pub.deleteQueue(queue).catch(() => {})
      await Promise.all([pub.close(), sub.close()])
    },
    async consume(onMessage) {
      const noAck = spec.mode === 'memory'
      await sub.consume(queue, {noAck, prefetch: spec.window}, (d) => onMessage(d.body, () => sub.ack(d.deliveryTag)))
    },
    drained: () => pub.drained(),
    name: 'mq',
    publish: (body) => pub.publishNoConfirm('', queue, body),
    publishConfirmed: async (body) => {
      await pub.publish('', queue, body)
    },
  }
}

/** RabbitMQ through amqplib: durable = durable queue, persistent messages, confirm channel, manual acks. */
export async function rabbitTransport(url: string, spec: BenchSpec): Promise<BenchTransport> {
  const amqp = await import('amqplib')
  const pubConn = await amqp.connect(url)
  const subConn = await amqp.connect(url)
  const durable = spec.mode === 'durable'
  const queue = `mq-bench.${spec.mode}.${randomBytes(4).toString('hex')}`
  const pubCh = durable ? await pubConn.createConfirmChannel() : await pubConn.createChannel()
  await pubCh.assertQueue(queue, {autoDelete: false, durable})
  const subCh = await subConn.createChannel()
  await subCh.prefetch(spec.window)
  return {
    async close() {
      await pubCh.deleteQueue(queue).catch(() => {})
      await pubConn.close().catch(() => {})
      await subConn.close().catch(() => {})
    },
    async consume(onMessage) {
      await subCh.consume(
        queue,
        (m) => {
          if (m) onMessage(m.content, () => subCh.ack(m))
        },
        {noAck: !durable},
      )
    },
    drained: () => new Promise((r) => pubCh.once('drain', () => r())),
    name: 'rabbitmq',
    publish: (body) => pubCh.sendToQueue(queue, body, {persistent: false}),
    publishConfirmed: (body) =>
      new Promise((resolve, reject) => {
        ;(pubCh as import('amqplib').ConfirmChannel).sendToQueue(queue, body, {persistent: true}, (err) => (err ? reject(err) : resolve()))
      }),
  }
}

/** NATS core pub/sub (no persistence, no acks): the in-memory reference. */
export async function natsTransport(servers: string, spec: BenchSpec): Promise<BenchTransport> {
  const {connect} = await import('nats')
  const pub = await connect({servers})
  const sub = await connect({servers})
  const subject = `mq.bench.${spec.mode}.${randomBytes(4).toString('hex')}`
  let sent = 0
  return {
    async close() {
      await pub.drain().catch(() => {})
      await sub.drain().catch(() => {})
    },
    async consume(onMessage) {
      sub.subscribe(subject, {callback: (_err, m) => onMessage(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength), () => {})})
      await sub.flush()
    },
    drained: () => pub.flush(),
    name: 'nats',
    publish: (body) => {
      pub.publish(subject, body)
      // nats.js buffers without limit: flush every so often to keep memory bounded
      return ++sent % 1000 !== 0
    },
    publishConfirmed: () => Promise.reject(new Error('NATS core has no confirms')),
  }
}
