import {type ChildProcess, spawn} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import type {ConnectionOptions} from 'node:tls'
import {fileURLToPath} from 'node:url'
import {Worker} from 'node:worker_threads'

import {Redis} from 'ioredis'

import {MqHome} from '../config/home.js'
import {defaultConfig} from '../config/load.js'
import {UnavailableError} from '../errors.js'
import {freePort} from '../util/net.js'
import {CertificateAuthority, clientTlsOptions} from '../pki/index.js'
import {cpuSeconds, perRequestUs} from '../util/cpu.js'
import {type LoadResult, loadTest} from './load.js'

export type {LoadResult} from './load.js'

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

/** The baseline's load phase with the CPU its server thread and the load generator used per request (Linux /proc; null elsewhere). */
export type BaselineResult = LoadResult & {cpu_us_per_request: {server: number | null; loadgen: number | null}}

export interface PipelineBenchResult {
  baseline: BaselineResult & {name: string}
  /** cpu_us_per_request: CPU time of the proxy, the broker and the load generator per request of the ingest phase (Linux /proc; null elsewhere) */
  proxy: LoadResult & {processes: number; cpu_us_per_request: {proxy: number | null; broker: number | null; loadgen: number | null}}
  /** null when the baseline or the proxy had errors: a ratio counts only when both finished clean */
  ratio: number | null
  /**
   * The ratio a run whose cores are all busy can reach: (baseline server + load generator) CPU per
   * request over (proxy + broker + load generator), Redis left out. A closed loop's throughput on a
   * shared machine swings with the other load, CPU per request much less, so this says what the
   * architecture allows. null when a figure is missing or either side had errors.
   */
  cpu_bound_ratio: number | null
  /** issue 17: the proxy at least 0.9x the baseline; the worker delivers at least the proxy's accepted rate */
  targets: {ratio: number; worker_vs_proxy: number}
  /** cpu_us_per_message: CPU time of the worker and of the broker per delivered message, from "worker ready" to the last delivery */
  worker: {messages: number; seconds: number; perSecond: number; concurrency: number; vs_proxy: number | null; cpu_us_per_message: {worker: number | null; broker: number | null}}
  store: string
}

/**
 * The baseline: a bare keep-alive mutual-TLS HTTPS server on a thread of its own (baseline-worker.ts,
 * certificate `baseline` of the CA in `home`) under the load generator, which runs on this thread.
 * CPU is read per thread, so the server's is not counted as the generator's.
 */
export async function benchBaseline(home: string, tls: ConnectionOptions, opts: {body: (i: number) => Buffer; connections: number; seconds: number}): Promise<BaselineResult> {
  const server = new Worker(new URL('./baseline-worker.js', import.meta.url), {workerData: {home}})
  const next = <T>() =>
    new Promise<T>((resolve, reject) => {
      server.once('message', resolve)
      server.once('error', reject)
    })
  try {
    const {port} = await next<{port: number}>()
    const serverCpu = async () => {
      const answer = next<{cpu: number | null}>()
      server.postMessage('cpu')
      return (await answer).cpu
    }
    const cpu0 = {loadgen: cpuSeconds('thread'), server: await serverCpu()}
    const r = await loadTest(`https://127.0.0.1:${port}/`, tls, {body: opts.body, connections: opts.connections, expect: 202, seconds: opts.seconds})
    const cpu = {loadgen: perRequestUs(cpu0.loadgen, cpuSeconds('thread'), r.requests), server: perRequestUs(cpu0.server, await serverCpu(), r.requests)}
    return {...r, cpu_us_per_request: cpu}
  } finally {
    server.postMessage('close')
    await new Promise((r) => server.once('exit', r))
  }
}

/**
 * Spawns a private broker, proxy and worker on free ports (temp MQ_HOME, unique Redis prefix),
 * measures proxy ingest, then worker delivery of everything ingested; and, as the baseline in the
 * same run, a bare keep-alive mutual-TLS HTTPS server that reads each request body and answers 202
 * with a body the size of the proxy's, doing nothing else (baseline-worker.ts).
 */
export async function benchPipeline(opts: {seconds: number; connections: number; concurrency: number; redisUrl: string; storeUrl?: string; processes?: number; log?: (s: string) => void; ports?: {broker?: number; api?: number; proxy?: number}}): Promise<PipelineBenchResult> {
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

    // baseline: same TLS and HTTP stack, reads the body, no other work, on its own thread (the proxy has its own process)
    log('baseline: bare mutual-TLS HTTPS server')
    const baseline = await benchBaseline(dir, tls, {body, connections: opts.connections, seconds: opts.seconds})

    const bp = opts.ports?.broker || (await freePort())
    const ap = opts.ports?.api || (await freePort())
    log('starting a private broker')
    procs.push(await spawnMq(['broker', 'start', '--port', String(bp), '--api-port', String(ap)], {...env, MQ_LOG_LEVEL: 'info'}, 'broker ready'))
    const pp = opts.ports?.proxy || (await freePort())
    log('starting the proxy')
    procs.push(await spawnMq(['proxy', 'start', '--port', String(pp), '--rate', '0', '--processes', String(opts.processes ?? 1), '--api', `https://127.0.0.1:${ap}`], {...env, MQ_LOG_LEVEL: 'info'}, 'proxy ready'))
    log(`proxy ingest: ${opts.connections} keep-alive connections for ${opts.seconds} s`)
    const [brokerPid, proxyPid] = [procs[0].pid, procs[1].pid]
    const cpu0 = {broker: cpuSeconds(brokerPid), loadgen: cpuSeconds('thread'), proxy: (opts.processes ?? 1) === 1 ? cpuSeconds(proxyPid) : null}
    const proxy = await loadTest(`https://127.0.0.1:${pp}/api/v1/messages`, tls, {body, connections: opts.connections, expect: 202, seconds: opts.seconds})
    const cpu = {
      broker: perRequestUs(cpu0.broker, cpuSeconds(brokerPid), proxy.requests),
      loadgen: perRequestUs(cpu0.loadgen, cpuSeconds('thread'), proxy.requests),
      proxy: perRequestUs(cpu0.proxy, cpu0.proxy === null ? null : cpuSeconds(proxyPid), proxy.requests),
    }
    await stop(procs.pop())

    const stream = `${prefix}ingest`
    const total = await redis.xlen(stream)
    log(`worker delivery of ${total} messages, concurrency ${opts.concurrency}`)
    procs.push(await spawnMq(['worker', 'start', '--metrics-port', '0', '--concurrency', String(opts.concurrency), '--api', `https://127.0.0.1:${ap}`], {...env, MQ_LOG_LEVEL: 'info'}, 'worker ready'))
    // timed from "worker ready": what it delivered during its own start-up is not counted
    const t0 = Date.now()
    const atStart = await redis.xlen(stream)
    const workerPid = procs.at(-1)!.pid
    const wcpu0 = {broker: cpuSeconds(brokerPid), worker: cpuSeconds(workerPid)}
    for (;;) {
      const left = await redis.xlen(stream)
      if (left === 0) break
      if (Date.now() - t0 > 600_000) throw new UnavailableError('E_BENCH_TIMEOUT', `the worker left ${left} messages after 10 minutes`)
      await new Promise((r) => setTimeout(r, 50))
    }
    const wsec = (Date.now() - t0) / 1000
    const wcpu = {broker: perRequestUs(wcpu0.broker, cpuSeconds(brokerPid), atStart), worker: perRequestUs(wcpu0.worker, cpuSeconds(workerPid), atStart)}
    const clean = baseline.errors === 0 && proxy.errors === 0
    const b = baseline.cpu_us_per_request
    const cpuBound = clean && [b.server, b.loadgen, cpu.proxy, cpu.broker, cpu.loadgen].every((x) => x !== null && x > 0) ? Math.round(((b.server! + b.loadgen!) / (cpu.proxy! + cpu.broker! + cpu.loadgen!)) * 100) / 100 : null
    return {
      baseline: {...baseline, name: 'bare keep-alive mutual-TLS HTTPS server on its own thread (same TLS/HTTP stack and settings; reads each body, answers 202 with a proxy-sized body; no validation, broker or Redis)'},
      cpu_bound_ratio: cpuBound,
      proxy: {...proxy, cpu_us_per_request: cpu, processes: opts.processes ?? 1},
      ratio: clean ? Math.round((proxy.perSecond / Math.max(1, baseline.perSecond)) * 100) / 100 : null,
      store: opts.storeUrl ? opts.storeUrl.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@') : 'sqlite',
      targets: {ratio: 0.9, worker_vs_proxy: 1},
      worker: {concurrency: opts.concurrency, cpu_us_per_message: wcpu, messages: atStart, perSecond: Math.round(atStart / wsec), seconds: Math.round(wsec * 10) / 10, vs_proxy: proxy.errors === 0 && proxy.perSecond > 0 ? Math.round((atStart / wsec / proxy.perSecond) * 100) / 100 : null},
    }
  } finally {
    for (const p of procs.reverse()) await stop(p)
    const keys = await redis.keys(prefix + '*').catch(() => [])
    if (keys.length) await redis.del(...keys).catch(() => {})
    redis.disconnect()
    rmSync(dir, {force: true, recursive: true})
  }
}
