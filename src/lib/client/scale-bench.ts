/**
 * `mq bench scale`: the broker with many objects rather than many messages. Three workloads, each
 * on mq (a private broker, spawned by the caller) and on RabbitMQ in the same run:
 * - queues: N durable queues, each bound to a topic exchange: declare rate, RSS, and for mq the time
 *   from restart to listening and the RSS after it;
 * - connections: N idle authenticated connections: open rate and RSS per connection;
 * - fanout: one producer, a fanout exchange, C queues with one consumer each: deliveries per second
 *   in total.
 * A benchmark, not a test: it reports; `--json` gives the figures to scripts.
 */
import {randomBytes} from 'node:crypto'

import type {BrokerClient} from './client.js'
import {rssOf} from './backlog-bench.js'

export interface ScaleOptions {
  queues: number
  connections: number
  consumers: number
  messages: number
  size: number
  /** unconfirmed publishes in flight and consumer prefetch in the fanout run */
  window: number
  log?: (line: string) => void
}

export interface ScaleResult {
  target: string
  queues: {count: number; seconds: number; perSec: number; rssBefore: number; rssAfter: number; restartMs?: number; rssAfterRestart?: number}
  connections: {count: number; seconds: number; perSec: number; rssBefore: number; rssAfter: number; bytesPerConnection: number}
  fanout: {consumers: number; published: number; delivered: number; seconds: number; deliveredPerSec: number}
}

/** What one broker must offer the scale workloads. */
export interface ScaleDriver {
  name: string
  /** the broker process, for RSS (undefined: not visible from here) */
  pid(): number | undefined
  declareQueues(prefix: string, count: number, exchange: string): Promise<void>
  deleteQueues(prefix: string, count: number, exchange: string): Promise<void>
  /** opens idle authenticated connections; the result closes them */
  openIdle(count: number): Promise<() => Promise<void>>
  fanout(o: {consumers: number; messages: number; size: number; window: number}): Promise<{delivered: number; seconds: number}>
  /** mq only: restart on the same home, resolves with ms from process start to listening */
  restart?(): Promise<number>
}

const CONCURRENCY = 32

/** Runs fn over 0..count-1 with at most `limit` in flight. */
async function pool(count: number, limit: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0
  const lane = async () => {
    while (next < count) await fn(next++)
  }
  await Promise.all(Array.from({length: Math.min(limit, count)}, lane))
}

const settle = () => new Promise((r) => setTimeout(r, 1000))
const rate = (n: number, s: number) => Math.round(n / Math.max(s, 1e-6))

export async function runScale(d: ScaleDriver, o: ScaleOptions): Promise<ScaleResult> {
  const log = o.log ?? (() => {})
  const rss = () => rssOf(d.pid() ?? 0)
  const tag = randomBytes(3).toString('hex')

  // queues
  const prefix = `scale.${tag}.q`
  const exchange = `scale.${tag}.x`
  let rssBefore = rss()
  let t0 = performance.now()
  await d.declareQueues(prefix, o.queues, exchange)
  let seconds = (performance.now() - t0) / 1000
  await settle()
  const queues: ScaleResult['queues'] = {count: o.queues, perSec: rate(o.queues, seconds), rssAfter: rss(), rssBefore, seconds: round(seconds)}
  log(`${d.name}: declared ${o.queues} durable queues with bindings in ${queues.seconds} s (${queues.perSec}/s), RSS ${mib(rssBefore)} -> ${mib(queues.rssAfter)} MiB`)
  if (d.restart) {
    queues.restartMs = await d.restart()
    await settle()
    queues.rssAfterRestart = rss()
    log(`${d.name}: restarted with ${o.queues} queues in ${queues.restartMs} ms, RSS ${mib(queues.rssAfterRestart)} MiB`)
  }
  await d.deleteQueues(prefix, o.queues, exchange)

  // idle connections
  await settle()
  rssBefore = rss()
  t0 = performance.now()
  const closeIdle = await d.openIdle(o.connections)
  seconds = (performance.now() - t0) / 1000
  await settle()
  const rssAfter = rss()
  const connections = {bytesPerConnection: Math.round((rssAfter - rssBefore) / o.connections), count: o.connections, perSec: rate(o.connections, seconds), rssAfter, rssBefore, seconds: round(seconds)}
  log(`${d.name}: ${o.connections} idle connections in ${connections.seconds} s, RSS ${mib(rssBefore)} -> ${mib(rssAfter)} MiB (${Math.round(connections.bytesPerConnection / 1024)} KiB each)`)
  await closeIdle()

  // fanout
  const f = await d.fanout({consumers: o.consumers, messages: o.messages, size: o.size, window: o.window})
  const fanout = {consumers: o.consumers, delivered: f.delivered, deliveredPerSec: rate(f.delivered, f.seconds), published: o.messages, seconds: round(f.seconds)}
  log(`${d.name}: fanout of ${o.messages} to ${o.consumers} consumers: ${f.delivered} deliveries in ${fanout.seconds} s (${fanout.deliveredPerSec}/s)`)
  return {connections, fanout, queues, target: d.name}
}

function round(s: number): number {
  return Math.round(s * 100) / 100
}

function mib(b: number): number {
  return Math.round(b / 1048576)
}

/** Waits until `count()` reaches `want` (deliveries of a fanout), failing after `ms` without progress. */
function until(count: () => number, want: number, ms = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let last = -1
    let still = performance.now()
    const t = setInterval(() => {
      const n = count()
      if (n >= want) {
        clearInterval(t)
        resolve()
      } else if (n !== last) {
        last = n
        still = performance.now()
      } else if (performance.now() - still > ms) {
        clearInterval(t)
        reject(new Error(`stalled at ${n} of ${want} deliveries`))
      }
    }, 5)
  })
}

export function mqScaleDriver(connect: () => Promise<BrokerClient>, pid: () => number | undefined, restart?: () => Promise<number>): ScaleDriver {
  return {
    async declareQueues(prefix, count, exchange) {
      const c = await connect()
      try {
        await c.declareExchange(exchange, 'topic', {durable: true})
        await pool(count, CONCURRENCY, async (i) => {
          await c.declareQueue(`${prefix}${i}`, {durable: true})
          await c.bind(`${prefix}${i}`, exchange, `k.${i}.#`)
        })
      } finally {
        await c.close()
      }
    },
    async deleteQueues(prefix, count) {
      const c = await connect()
      try {
        await pool(count, CONCURRENCY, (i) => c.deleteQueue(`${prefix}${i}`).catch(() => {}))
      } finally {
        await c.close()
      }
    },
    async fanout(o) {
      const c = await connect()
      const tag = randomBytes(3).toString('hex')
      const exchange = `scale.${tag}.fan`
      const names = Array.from({length: o.consumers}, (_, i) => `scale.${tag}.f${i}`)
      await c.declareExchange(exchange, 'fanout', {durable: false})
      for (const q of names) {
        await c.declareQueue(q, {durable: false})
        await c.bind(q, exchange, '')
      }
      let delivered = 0
      const subs: BrokerClient[] = []
      for (const q of names) {
        const s = await connect()
        subs.push(s)
        await s.consume(q, {noAck: true, prefetch: o.window}, () => {
          delivered++
        })
      }
      const pub = await connect()
      const body = randomBytes(o.size)
      const t0 = performance.now()
      for (let i = 0; i < o.messages; i++) if (!pub.publishNoConfirm(exchange, '', body)) await pub.drained()
      await until(() => delivered, o.messages * o.consumers)
      const seconds = (performance.now() - t0) / 1000
      for (const q of names) await c.deleteQueue(q).catch(() => {})
      for (const x of [pub, c, ...subs]) await x.close().catch(() => {})
      return {delivered, seconds}
    },
    name: 'mq',
    async openIdle(count) {
      const open: BrokerClient[] = []
      await pool(count, CONCURRENCY, async () => {
        const c = await connect()
        c.on('error', () => {})
        open.push(c)
      })
      return async () => {
        await pool(open.length, 256, (i) => open[i].close().catch(() => {}))
      }
    },
    pid,
    restart,
  }
}

/** RabbitMQ through amqplib: durable queues bound to a durable topic exchange, AMQP connections. */
export function rabbitScaleDriver(url: string, pid: () => number | undefined): ScaleDriver {
  const amqp = () => import('amqplib')
  return {
    async declareQueues(prefix, count, exchange) {
      const conn = await (await amqp()).connect(url)
      try {
        const ch = await conn.createChannel()
        await ch.assertExchange(exchange, 'topic', {durable: true})
        await pool(count, CONCURRENCY, async (i) => {
          await ch.assertQueue(`${prefix}${i}`, {durable: true})
          await ch.bindQueue(`${prefix}${i}`, exchange, `k.${i}.#`)
        })
      } finally {
        await conn.close().catch(() => {})
      }
    },
    async deleteQueues(prefix, count, exchange) {
      const conn = await (await amqp()).connect(url)
      try {
        const ch = await conn.createChannel()
        await pool(count, CONCURRENCY, (i) => ch.deleteQueue(`${prefix}${i}`))
        await ch.deleteExchange(exchange)
      } finally {
        await conn.close().catch(() => {})
      }
    },
    async fanout(o) {
      const lib = await amqp()
      const tag = randomBytes(3).toString('hex')
      const exchange = `scale.${tag}.fan`
      const admin = await lib.connect(url)
      const ach = await admin.createChannel()
      await ach.assertExchange(exchange, 'fanout', {autoDelete: false, durable: false})
      const names = Array.from({length: o.consumers}, (_, i) => `scale.${tag}.f${i}`)
      let delivered = 0
      const conns = []
      for (const q of names) {
        await ach.assertQueue(q, {durable: false})
        await ach.bindQueue(q, exchange, '')
        const conn = await lib.connect(url)
        conns.push(conn)
        const ch = await conn.createChannel()
        await ch.prefetch(o.window)
        await ch.consume(q, (m) => m && delivered++, {noAck: true})
      }
      const pconn = await lib.connect(url)
      const pch = await pconn.createChannel()
      const body = randomBytes(o.size)
      const t0 = performance.now()
      for (let i = 0; i < o.messages; i++) if (!pch.publish(exchange, '', body)) await new Promise((r) => pch.once('drain', r))
      await until(() => delivered, o.messages * o.consumers)
      const seconds = (performance.now() - t0) / 1000
      for (const q of names) await ach.deleteQueue(q).catch(() => {})
      await ach.deleteExchange(exchange).catch(() => {})
      for (const c of [pconn, admin, ...conns]) await c.close().catch(() => {})
      return {delivered, seconds}
    },
    name: 'rabbitmq',
    async openIdle(count) {
      const lib = await amqp()
      const open: Awaited<ReturnType<typeof lib.connect>>[] = []
      await pool(count, CONCURRENCY, async () => {
        const c = await lib.connect(url)
        c.on('error', () => {})
        open.push(c)
      })
      return async () => {
        await pool(open.length, 256, (i) => open[i].close().catch(() => {}))
      }
    },
    pid,
  }
}
