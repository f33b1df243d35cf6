/**
 * `mq bench backlog` (npm run bench:backlog): queues bigger than memory (issue 15). N messages into a
 * durable queue with no consumer, a restart, then one consumer drains it; against a private mq broker
 * (spawned here, so its RSS and restart can be measured) and RabbitMQ's durable queue in the same run.
 * Baseline for the drain rate: the same durable workload through an empty queue (a producer and a
 * consumer at once, the queue never holding a backlog).
 */
import {readFileSync} from 'node:fs'
import {readdirSync} from 'node:fs'

import type {BenchSpec, BenchTarget} from './bench.js'
import {Window} from '../util/window.js'

export interface BacklogPhase {
  /** messages per second */
  rate: number
  seconds: number
  /** peak resident memory of the broker process during the phase (bytes; 0 = not measurable) */
  rssPeak: number
}

export interface BacklogResult {
  target: string
  messages: number
  size: number
  /** an empty durable queue: producer and consumer at once */
  emptyQueue: BacklogPhase
  publish: BacklogPhase
  /** between publish and drain: time from starting the broker process to its "ready" (mq only) */
  restartMs?: number
  /** the same with an empty store, before the publish: the baseline for restartMs */
  restartEmptyMs?: number
  rssAfterRestart?: number
  drain: BacklogPhase
  /** drain rate / empty-queue rate */
  drainRatio: number
}

/** VmRSS of a process in bytes (0 when it cannot be read). */
export function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : 0
  } catch {
    return 0
  }
}

/** The pid of the local RabbitMQ node (its Erlang VM), to read its RSS; undefined when not visible. */
export function findRabbitPid(): number | undefined {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() === 'beam.smp' && readFileSync(`/proc/${d}/cmdline`, 'utf8').includes('rabbit')) return Number(d)
    } catch {
      // gone meanwhile
    }
  }
  return undefined
}

/** Samples a process's RSS every 100 ms; stop() gives the peak. */
export function rssSampler(pid: () => number | undefined): {stop(): number} {
  let peak = 0
  const sample = () => {
    const p = pid()
    if (p) peak = Math.max(peak, rssOf(p))
  }
  sample()
  const t = setInterval(sample, 100)
  return {
    stop() {
      clearInterval(t)
      sample()
      return peak
    },
  }
}

const body = (size: number, i: number) => {
  const b = Buffer.alloc(size, 120)
  b.writeUInt32BE(i, 0)
  return b
}

/** Publishes n messages with confirms, `window` in flight. */
async function publishAll(target: BenchTarget, spec: BenchSpec, dest: string, n: number): Promise<void> {
  const p = await target.producer(spec, dest)
  const window = new Window(spec.window)
  let failure: unknown
  try {
    for (let i = 0; i < n && failure === undefined; i++) {
      await window.acquire()
      p.publishConfirmed(body(spec.size, i)).then(window.release, (error: unknown) => {
        failure ??= error
        window.release()
      })
    }
    await window.idle()
    if (failure !== undefined) throw failure
  } finally {
    await p.close()
  }
}

/** Consumes (with acks) until n messages arrived; checks they arrive in publish order. */
async function consumeAll(target: BenchTarget, spec: BenchSpec, dest: string, n: number, started?: () => void): Promise<{outOfOrder: number}> {
  const c = await target.consumer(spec, dest)
  let received = 0
  let last = -1
  let outOfOrder = 0
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${received} of ${n} messages arrived within 600 s`)), 600_000)
    c.start((b, ack) => {
      const i = b.readUInt32BE(0)
      if (i <= last) outOfOrder++
      last = i
      ack()
      if (++received === n) {
        clearTimeout(timer)
        resolve()
      }
    })
      .then(() => started?.())
      .catch(reject)
  })
  await c.close()
  return {outOfOrder}
}

const phase = (n: number, t0: number, rssPeak: number): BacklogPhase => {
  const seconds = (performance.now() - t0) / 1000
  return {rate: Math.round(n / seconds), rssPeak, seconds: Math.round(seconds * 100) / 100}
}

export interface BacklogOptions {
  messages: number
  size: number
  window: number
  /** messages of the empty-queue baseline run */
  baselineMessages: number
  /** the broker process (for RSS); for mq it changes at the restart */
  pid: () => number | undefined
  /** restarts the broker and resolves with ms from process start to listening (mq only) */
  restart?: () => Promise<number>
  log?: (line: string) => void
}

/** One target: empty-queue baseline, then publish N with no consumer, (restart,) drain. */
export async function runBacklog(target: BenchTarget, o: BacklogOptions): Promise<BacklogResult> {
  const spec: BenchSpec = {messages: o.messages, mode: 'durable', size: o.size, window: o.window}
  const log = o.log ?? (() => {})
  // baseline: an empty durable queue, producer and consumer at once
  const base = await target.prepare(spec)
  let s = rssSampler(o.pid)
  let t0 = performance.now()
  await Promise.all([consumeAll(target, spec, base, o.baselineMessages), publishAll(target, spec, base, o.baselineMessages)])
  const emptyQueue = phase(o.baselineMessages, t0, s.stop())
  await target.cleanup(base)
  log(`${target.name}: empty queue ${emptyQueue.rate} msg/s`)

  const restartEmptyMs = o.restart ? await o.restart() : undefined
  if (restartEmptyMs !== undefined) log(`${target.name}: restarted with an empty store in ${restartEmptyMs} ms`)
  const dest = await target.prepare(spec)
  s = rssSampler(o.pid)
  t0 = performance.now()
  await publishAll(target, spec, dest, o.messages)
  const publish = phase(o.messages, t0, s.stop())
  log(`${target.name}: published ${o.messages} in ${publish.seconds} s (${publish.rate} msg/s), RSS peak ${Math.round(publish.rssPeak / 1048576)} MiB`)

  let restartMs: number | undefined
  let rssAfterRestart: number | undefined
  if (o.restart) {
    restartMs = await o.restart()
    await new Promise((r) => setTimeout(r, 1000))
    rssAfterRestart = rssOf(o.pid() ?? 0)
    log(`${target.name}: restarted in ${restartMs} ms, RSS ${Math.round(rssAfterRestart / 1048576)} MiB`)
  }

  s = rssSampler(o.pid)
  t0 = performance.now()
  const {outOfOrder} = await consumeAll(target, spec, dest, o.messages)
  const drain = phase(o.messages, t0, s.stop())
  if (outOfOrder > 0) log(`${target.name}: ${outOfOrder} messages arrived out of order`)
  log(`${target.name}: drained in ${drain.seconds} s (${drain.rate} msg/s), RSS peak ${Math.round(drain.rssPeak / 1048576)} MiB`)
  await target.cleanup(dest)
  return {drain, drainRatio: Math.round((drain.rate / emptyQueue.rate) * 100) / 100, emptyQueue, messages: o.messages, publish, restartEmptyMs, restartMs, rssAfterRestart, size: o.size, target: target.name}
}
