import {type ChildProcess, spawn} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {Agent, createServer, request} from 'node:https'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import type {AddressInfo} from 'node:net'
import {fileURLToPath} from 'node:url'

import {Redis} from 'ioredis'

import {MqHome} from '../config/home.js'
import {defaultConfig} from '../config/load.js'
import {UnavailableError} from '../errors.js'
import {freePort} from '../util/net.js'
import {CertificateAuthority, clientTlsOptions, serverTlsOptions} from '../pki/index.js'

const BIN = fileURLToPath(new URL('../../../../bin/run.js', import.meta.url))

function spawnMq(args: string[], env: NodeJS.ProcessEnv, ready: string): Promise<ChildProcess> {
  const proc = spawn(process.execPath, [BIN, ...args], {env: {...process.env, ...env}, stdio: ['ignore', 'ignore', 'pipe']})
  let log = ''
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new UnavailableError('E_BENCH_SPAWN', `mq ${args.join(' ')} did not start:\n${log}`)), 90_000)
    proc.stderr!.on('data', (d: Buffer) => {
      log += d.toString()
      if (log.includes(ready)) {
        clearTimeout(t)
        resolve(proc)
      }
    })
    proc.once('exit', (code) => {
      clearTimeout(t)
      reject(new UnavailableError('E_BENCH_SPAWN', `mq ${args.join(' ')} exited ${code}:\n${log}`))
    })
  })
}

const stop = (p?: ChildProcess) =>
  new Promise<void>((r) => {
    if (!p || p.exitCode !== null || p.signalCode !== null) return r()
    p.once('exit', () => r())
    p.kill('SIGTERM')
  })

export interface LoadResult {
  requests: number
  accepted: number
  errors: number
  seconds: number
  perSecond: number
  p50ms: number
  p99ms: number
}

/** Closed-loop load over `connections` keep-alive mutual-TLS connections for `seconds`. */
export async function loadTest(url: string, tls: object, opts: {connections: number; seconds: number; body: (i: number) => Buffer; expect: number}): Promise<LoadResult> {
  const agent = new Agent({...tls, checkServerIdentity: () => undefined, keepAlive: true, maxSockets: opts.connections} as never)
  const u = new URL(url)
  const lat: number[] = []
  let accepted = 0
  let errors = 0
  let i = 0
  const one = () =>
    new Promise<void>((resolve) => {
      const body = opts.body(i++)
      const t0 = process.hrtime.bigint()
      const req = request({agent, headers: {'content-length': String(body.length), 'content-type': 'application/json'}, host: u.hostname, method: 'POST', path: u.pathname, port: u.port}, (res) => {
        res.resume()
        res.on('end', () => {
          lat.push(Number(process.hrtime.bigint() - t0) / 1e6)
          if (res.statusCode === opts.expect) accepted++
          else errors++
          resolve()
        })
      })
      req.on('error', () => {
        errors++
        resolve()
      })
      req.end(body)
    })
  // warm up the connections first, outside the measurement
  await Promise.all(Array.from({length: opts.connections}, one))
  lat.length = 0
  accepted = 0
  errors = 0
  const end = Date.now() + opts.seconds * 1000
  const t0 = Date.now()
  await Promise.all(
    Array.from({length: opts.connections}, async () => {
      while (Date.now() < end) await one()
    }),
  )
  const seconds = (Date.now() - t0) / 1000
  agent.destroy()
  lat.sort((a, b) => a - b)
  const q = (p: number) => (lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] * 100) / 100 : 0)
  return {accepted, errors, p50ms: q(0.5), p99ms: q(0.99), perSecond: Math.round(accepted / seconds), requests: lat.length, seconds: Math.round(seconds * 10) / 10}
}

export interface PipelineBenchResult {
  baseline: LoadResult & {name: string}
  proxy: LoadResult & {processes: number}
  ratio: number
  worker: {messages: number; seconds: number; perSecond: number; concurrency: number}
  store: string
}

/**
 * Spawns a private broker, proxy and worker on free ports (temp MQ_HOME, unique Redis prefix),
 * measures proxy ingest, then worker delivery of everything ingested; and, as the baseline in the
 * same run, a bare keep-alive mutual-TLS HTTPS server that answers 202 without doing anything.
 */
export async function benchPipeline(opts: {seconds: number; connections: number; concurrency: number; redisUrl: string; storeUrl?: string; processes?: number; log?: (s: string) => void}): Promise<PipelineBenchResult> {
  const log = opts.log ?? (() => {})
  const dir = mkdtempSync(join(tmpdir(), 'mq-pbench-'))
  const home = new MqHome(dir)
  const prefix = `mqbench_${process.pid}_${Date.now()}:`
  const procs: ChildProcess[] = []
  const redis = new Redis(opts.redisUrl)
  try {
    await CertificateAuthority.open(home, defaultConfig().pki).ensureDevelopment({clients: ['admin', 'proxy', 'worker', 'bench'], servers: ['broker', 'proxy-server', 'baseline']})
    const env: NodeJS.ProcessEnv = {MQ_HOME: dir, MQ_LOG_LEVEL: 'warn', MQ_REDIS_KEY_PREFIX: prefix, MQ_REDIS_URL: opts.redisUrl, ...(opts.storeUrl ? {MQ_STORE_URL: opts.storeUrl} : {})}
    const tls = clientTlsOptions(home, 'bench')
    const body = (i: number) => Buffer.from(JSON.stringify({message_body: `benchmark message ${i}`, sender_number: '+4915200000000'}))

    // baseline: same TLS and HTTP stack, no work
    log('baseline: bare mutual-TLS HTTPS server')
    const srv = createServer(serverTlsOptions(home, 'baseline'), (req, res) => {
      req.resume()
      req.on('end', () => {
        res.writeHead(202, {'content-type': 'application/json'})
        res.end('{"status":"queued"}')
      })
    })
    // it runs in this process, like the load generator: a conservative baseline
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
    const bport = (srv.address() as AddressInfo).port
    const baseline = await loadTest(`https://127.0.0.1:${bport}/`, tls, {body, connections: opts.connections, expect: 202, seconds: opts.seconds})
    srv.close()
    srv.closeAllConnections()

    const bp = await freePort()
    const ap = await freePort()
    log('starting a private broker')
    procs.push(await spawnMq(['broker', 'start', '--port', String(bp), '--api-port', String(ap)], {...env, MQ_LOG_LEVEL: 'info'}, 'broker ready'))
    const pp = await freePort()
    log('starting the proxy')
    procs.push(await spawnMq(['proxy', 'start', '--port', String(pp), '--rate', '0', '--processes', String(opts.processes ?? 1), '--api', `https://127.0.0.1:${ap}`], {...env, MQ_LOG_LEVEL: 'info'}, 'proxy ready'))
    log(`proxy ingest: ${opts.connections} keep-alive connections for ${opts.seconds} s`)
    const proxy = await loadTest(`https://127.0.0.1:${pp}/api/v1/messages`, tls, {body, connections: opts.connections, expect: 202, seconds: opts.seconds})
    await stop(procs.pop())

    const stream = `${prefix}ingest`
    const total = await redis.xlen(stream)
    log(`worker delivery of ${total} messages, concurrency ${opts.concurrency}`)
    procs.push(await spawnMq(['worker', 'start', '--metrics-port', '0', '--concurrency', String(opts.concurrency), '--api', `https://127.0.0.1:${ap}`], {...env, MQ_LOG_LEVEL: 'info'}, 'worker ready'))
    // timed from "worker ready": what it delivered during its own start-up is not counted
    const t0 = Date.now()
    const atStart = await redis.xlen(stream)
    for (;;) {
      const left = await redis.xlen(stream)
      if (left === 0) break
      if (Date.now() - t0 > 600_000) throw new UnavailableError('E_BENCH_TIMEOUT', `the worker left ${left} messages after 10 minutes`)
      await new Promise((r) => setTimeout(r, 50))
    }
    const wsec = (Date.now() - t0) / 1000
    return {
      baseline: {...baseline, name: 'bare keep-alive mutual-TLS HTTPS server answering 202 (same TLS/HTTP stack, no work)'},
      proxy: {...proxy, processes: opts.processes ?? 1},
      ratio: Math.round((proxy.perSecond / Math.max(1, baseline.perSecond)) * 100) / 100,
      store: opts.storeUrl ? opts.storeUrl.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@') : 'sqlite',
      worker: {concurrency: opts.concurrency, messages: atStart, perSecond: Math.round(atStart / wsec), seconds: Math.round(wsec * 10) / 10},
    }
  } finally {
    for (const p of procs.reverse()) await stop(p)
    const keys = await redis.keys(prefix + '*').catch(() => [])
    if (keys.length) await redis.del(...keys).catch(() => {})
    redis.disconnect()
    rmSync(dir, {force: true, recursive: true})
  }
}
