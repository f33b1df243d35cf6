/**
 * Building blocks of the chaos battery: private servers on free loopback ports, publishers that
 * survive a broker restart, a consumer that feeds the Tally, and probes that time a normal client.
 */
import {connect as tcpConnect} from 'node:net'
import {type ConnectionOptions, connect as tlsConnect} from 'node:tls'

import {Redis} from 'ioredis'

import {BrokerClient} from '../../src/lib/client/client.js'
import {MqHome} from '../../src/lib/config/home.js'
import {defaultConfig} from '../../src/lib/config/load.js'
import {ApiClient} from '../../src/lib/http/client.js'
import {CertificateAuthority, clientTlsOptions} from '../../src/lib/pki/index.js'
import {type BrokerProcess, spawnBroker} from '../helpers/broker.js'
import {tempHome} from '../helpers/home.js'
import {privateMariadb, privateRedis} from '../helpers/pipeline.js'
import {freePort, waitFor} from '../helpers/services.js'
import {spawnMq} from '../e2e/pipeline/spawn.js'
import {type Tally, payloadOk} from './ledger.js'

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
export type Proc = Awaited<ReturnType<typeof spawnMq>>
export type PrivateRedis = Awaited<ReturnType<typeof privateRedis>>
export type PrivateMariadb = Awaited<ReturnType<typeof privateMariadb>>

/** Everything a scenario started, stopped in reverse order by close(). */
export class Stack {
  private readonly closers: (() => Promise<unknown> | unknown)[] = []

  add<T>(v: T, close: (v: T) => Promise<unknown> | unknown): T {
    this.closers.push(() => close(v))
    return v
  }

  async close(): Promise<void> {
    for (const c of this.closers.reverse()) await Promise.resolve(c()).catch(() => {})
  }
}

export async function broker(stack: Stack, opts: {home?: string; env?: NodeJS.ProcessEnv; ciphermq?: boolean} = {}): Promise<BrokerProcess> {
  const own = opts.home ? undefined : stack.add(tempHome('mq-chaos-'), (h) => h.cleanup())
  return stack.add(await spawnBroker({ciphermq: opts.ciphermq, env: opts.env, home: opts.home ?? own!.dir}), (b) => b.stop())
}

/** A connection that comes back after the broker does (retries for up to two minutes). */
export class Reconnecting {
  private current?: Promise<BrokerClient>

  constructor(private readonly b: () => BrokerProcess) {}

  get(): Promise<BrokerClient> {
    this.current ??= (async () => {
      const end = Date.now() + 120_000
      for (;;) {
        try {
          return await this.b().connect('admin', {timeoutMs: 10_000})
        } catch (error) {
          if (Date.now() > end) throw error
          await sleep(200)
        }
      }
    })()
    return this.current
  }

  /** Drops the connection `c` after it failed (no-op if a newer one exists). */
  async broken(c: BrokerClient): Promise<void> {
    const cur = this.current
    if (cur && (await cur.catch(() => undefined)) === c) this.current = undefined
    c.close().catch(() => {})
  }

  async close(): Promise<void> {
    const c = await this.current?.catch(() => undefined)
    await c?.close().catch(() => {})
  }
}

/**
 * Publishes `ids` to `queue` with confirms, `window` at a time, through broker restarts: a publish
 * that fails is retried on a fresh connection with the same message id (`sameId`), or as a careless
 * client does, with a new id for the same payload. Resolves when every id is confirmed.
 */
export async function publishAll(conn: Reconnecting, queue: string, ids: string[], tally: Tally, opts: {window: number; sameId: boolean; payload: (id: string) => Buffer; onConfirm?: (n: number) => void}): Promise<{retries: number}> {
  let next = 0
  let retries = 0
  let attempt = 0
  const one = async (id: string) => {
    tally.send(id)
    for (let k = 0; ; k++) {
      const c = await conn.get()
      try {
        await c.publish('', queue, opts.payload(id), {messageId: opts.sameId || k === 0 ? id : `${id}~retry${++attempt}`})
        tally.confirm(id)
        opts.onConfirm?.(tally.confirmed.size)
        return
      } catch {
        retries++
        await conn.broken(c)
        await sleep(50)
      }
    }
  }
  await Promise.all(
    Array.from({length: opts.window}, async () => {
      while (next < ids.length) await one(ids[next++])
    }),
  )
  return {retries}
}

/** The logical id a payload carries (see payloadFor). */
export const logicalId = (body: Buffer) => body.toString().split('|')[0]

/** Consumes `queue` with manual acks into the tally until every confirmed id arrived (or `quietMs` passes without news). */
export async function drain(conn: Reconnecting, queue: string, tally: Tally, opts: {quietMs?: number; timeoutMs?: number; extract?: (body: Buffer) => {id: string; ok: boolean} | undefined} = {}): Promise<void> {
  const extract = opts.extract ?? ((b: Buffer) => ({id: logicalId(b), ok: payloadOk(logicalId(b), b)}))
  let last = Date.now()
  const c = await conn.get()
  const sub = await c.consume(queue, {prefetch: 500}, (d) => {
    const e = extract(d.body)
    tally.receive(e?.id ?? `?${d.messageId}`, e?.ok ?? false, d.redelivered)
    last = Date.now()
    c.ack(d.deliveryTag)
  })
  const end = Date.now() + (opts.timeoutMs ?? 120_000)
  while (Date.now() < end) {
    if ([...tally.confirmed].every((id) => tally.has(id)) && Date.now() - last > 500) break
    if (Date.now() - last > (opts.quietMs ?? 15_000)) break
    await sleep(100)
  }
  await sub.cancel().catch(() => {})
}

export interface Pipeline {
  home: string
  broker: BrokerProcess
  redis: PrivateRedis
  mariadb?: PrivateMariadb
  proxyPort: number
  proxy: Proc
  workers: Proc[]
  client: ApiClient
  env: NodeJS.ProcessEnv
  queue: string
}

/** broker + private redis (+ private mariadb) + proxy + workers, and a queue the workers deliver into. */
export async function pipeline(stack: Stack, opts: {aof?: boolean; mariadb?: boolean; processes?: number; workers?: number; concurrentStart?: boolean; retryDelayMs?: number} = {}): Promise<Pipeline> {
  const redis = stack.add(await privateRedis({aof: opts.aof}), (r) => r.destroy())
  const mariadb = opts.mariadb ? stack.add(await privateMariadb(), (m) => m.destroy()) : undefined
  const h = stack.add(tempHome('mq-chaos-pipe-'), (x) => x.cleanup())
  // the reconciler sooner than its 2 min default, so a scenario that loses Redis's data ends in seconds
  const env: NodeJS.ProcessEnv = {MQ_REDIS_KEY_PREFIX: 'chaos:', MQ_REDIS_URL: redis.url, MQ_WORKER_RECONCILE_AFTER: '5s', MQ_WORKER_RECONCILE_INTERVAL: '1s', ...(mariadb ? {MQ_STORE_URL: mariadb.url} : {})}
  const b = await broker(stack, {env, home: h.dir})
  const home = new MqHome(h.dir)
  // the client identity only; proxy and worker certificates are issued by the processes themselves on first start
  await CertificateAuthority.open(home, defaultConfig().pki).ensureDevelopment({clients: ['alice'], servers: []})
  const penv = {...env, MQ_CLIENT_API: `https://127.0.0.1:${b.apiPort}`, MQ_HOME: h.dir}
  const proxyPort = await freePort()
  const queue = 'chaos'
  const c = await b.connect('admin')
  await c.declareQueue(queue, {durable: true})
  await c.bind(queue, 'default_exchange', queue)
  await c.close()
  const startProxy = () => spawnMq(['proxy', 'start', '--port', String(proxyPort), '--rate', '0', '--processes', String(opts.processes ?? 1)], penv, 'proxy ready', 180_000)
  const startWorker = () => spawnMq(['worker', 'start', '--metrics-port', '0', '--retry-delay', `${opts.retryDelayMs ?? 200}ms`, '--routing-key', queue], penv, 'worker ready', 180_000)
  let proxy: Proc
  const workers: Proc[] = []
  if (opts.concurrentStart) {
    const all = await Promise.all([startProxy(), ...Array.from({length: opts.workers ?? 1}, startWorker)])
    proxy = all[0]
    workers.push(...all.slice(1))
  } else {
    proxy = await startProxy()
    for (let i = 0; i < (opts.workers ?? 1); i++) workers.push(await startWorker())
  }
  stack.add(proxy, (p) => p.stop('SIGKILL'))
  for (const w of workers) stack.add(w, (p) => p.stop('SIGKILL'))
  const client = stack.add(new ApiClient(`https://127.0.0.1:${proxyPort}`, clientTlsOptions(home, 'alice'), 10_000), (x) => x.close())
  return {broker: b, client, env: penv, home: h.dir, mariadb, proxy, proxyPort, queue, redis, workers}
}

/** POSTs one message; resolves the proxy's message id on 202, else undefined (with the status). */
export async function ingest(client: ApiClient, body: string, idem?: string): Promise<{id?: string; status: number; code?: string}> {
  const r = await client
    .request<{message_id?: string; error?: {code?: string}}>('POST', '/api/v1/messages', {message_body: body, sender_number: '+4915200000000'}, idem ? {'idempotency-key': idem} : {})
    .catch(() => ({body: {} as {message_id?: string; error?: {code?: string}}, status: 0}))
  return {code: r.body?.error?.code, id: r.status === 202 ? r.body.message_id : undefined, status: r.status}
}

/** Logical id inside a pipeline delivery (the record carries the message_body we sent). */
export function pipelineExtract(body: Buffer): {id: string; ok: boolean} | undefined {
  const m = /(c-[\w.-]+)\|([0-9a-f]{24})\|/.exec(body.toString())
  if (!m) return undefined
  return {id: m[1], ok: payloadOk(m[1], Buffer.from(`${m[1]}|${m[2]}|`))}
}

/** Times a normal client while something misbehaves: a fresh connection and one request, every `everyMs`. */
/** A normal client is locked out when it cannot get in for this long (a retry a second later is not a lockout). */
export const LOCKOUT_MS = 2000

export function probe(fn: () => Promise<void>, everyMs: number): {stop: () => Promise<{ok: number; failed: number; errors: string[]; p50: number; p99: number; max: number; longestOutageMs: number}>} {
  const times: number[] = []
  const errors: string[] = []
  let stopped = false
  // a client is locked out when its attempts keep failing: the longest run of failures, first failure to next success
  let failingSince: number | undefined
  let longestOutageMs = 0
  const loop = (async () => {
    while (!stopped) {
      const t = performance.now()
      try {
        await fn()
        times.push(performance.now() - t)
        if (failingSince !== undefined) longestOutageMs = Math.max(longestOutageMs, performance.now() - failingSince)
        failingSince = undefined
      } catch (error) {
        errors.push((error as Error).message.split('\n')[0].slice(0, 120))
        failingSince ??= t
      }
      await sleep(everyMs)
    }
    if (failingSince !== undefined) longestOutageMs = Number.POSITIVE_INFINITY
  })()
  return {
    async stop() {
      stopped = true
      await loop
      const s = [...times].sort((a, b) => a - b)
      const q = (p: number) => (s.length ? Math.round(s[Math.min(s.length - 1, Math.floor(p * s.length))]) : -1)
      return {errors: [...new Set(errors)], failed: errors.length, longestOutageMs: Math.round(longestOutageMs), max: q(1), ok: times.length, p50: q(0.5), p99: q(0.99)}
    },
  }
}

/** A BrokerClient probe: connect over mutual TLS, list queues, close. */
export const brokerProbe = (b: BrokerProcess) => async () => {
  const c = await b.connect('admin', {timeoutMs: 5000})
  try {
    await c.listQueues()
  } finally {
    await c.close().catch(() => {})
  }
}

/** Raw sockets that drip `bytes` one byte every `everyMs`; counts how many the server closed. */
export function drippers(n: number, port: number, bytes: (i: number) => Buffer, everyMs: number, opts: {tls?: ConnectionOptions} = {}): {closed: () => number; open: () => number; stop: () => void} {
  let closed = 0
  const socks: {destroy: () => void}[] = []
  const timers: NodeJS.Timeout[] = []
  for (let i = 0; i < n; i++) {
    const data = bytes(i)
    let at = 0
    const s = opts.tls ? tlsConnect({...opts.tls, port}) : tcpConnect({host: '127.0.0.1', port})
    s.on('error', () => {})
    s.on('close', () => closed++)
    const start = () => {
      const t = setInterval(() => {
        if (s.destroyed || at >= data.length) return
        s.write(data.subarray(at, ++at))
      }, everyMs)
      timers.push(t)
    }
    if (opts.tls) s.once('secureConnect', start)
    else s.once('connect', start)
    socks.push(s)
  }
  return {
    closed: () => closed,
    open: () => n - closed,
    stop() {
      for (const t of timers) clearInterval(t)
      for (const s of socks) s.destroy()
    },
  }
}

/** Keys of a private Redis (for a scenario's own checks). */
export async function redisLen(url: string, key: string): Promise<number> {
  const r = new Redis(url, {lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null})
  r.on('error', () => {})
  try {
    await r.connect()
    return await r.xlen(key)
  } catch {
    return -1
  } finally {
    r.disconnect()
  }
}

export {waitFor}
