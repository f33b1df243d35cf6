import {type ChildProcess, spawn} from 'node:child_process'
import {cpSync, mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {UnavailableError} from '../errors.js'
import {cpuSeconds} from '../util/cpu.js'
import {freePort} from '../util/net.js'

const BIN = fileURLToPath(new URL('../../../../bin/run.js', import.meta.url))

/**
 * A throwaway broker in a temp MQ_HOME on free loopback ports (for `mq bench` without a running broker).
 * With `home`, a broker on that home (a restart; stop(true) keeps the home). `readyMs`: from starting
 * the process to its "broker ready" line.
 */
export async function spawnPrivateBroker(opts: {home?: string; env?: NodeJS.ProcessEnv} = {}): Promise<{home: string; port: number; proc: ChildProcess; readyMs: number; stop(keepHome?: boolean): Promise<void>}> {
  const home = opts.home ?? mkdtempSync(join(tmpdir(), 'mq-bench-'))
  const port = await freePort()
  const apiPort = await freePort()
  const t0 = performance.now()
  const proc = spawn(process.execPath, [BIN, 'broker', 'start', '--home', home, '--port', String(port), '--api-port', String(apiPort)], {
    env: {...process.env, MQ_LOG_LEVEL: 'info', ...opts.env},
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let log = ''
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new UnavailableError('E_BENCH_BROKER', `the private broker did not start:\n${log}`, {hint: 'Try this: start one yourself (mq broker start) and pass --broker'})), 90_000)
    proc.stderr!.on('data', (d: Buffer) => {
      log += d.toString()
      if (log.includes('broker ready')) {
        clearTimeout(t)
        resolve()
      }
    })
    proc.once('exit', (code) => {
      clearTimeout(t)
      reject(new UnavailableError('E_BENCH_BROKER', `the private broker exited (${code}):\n${log}`, {hint: 'Try this: mq broker start, then mq bench --broker HOST:PORT'}))
    })
  })
  const readyMs = Math.round(performance.now() - t0)
  proc.stderr!.resume()
  return {
    home,
    port,
    proc,
    readyMs,
    async stop(keepHome = false) {
      if (proc.exitCode === null && proc.signalCode === null) {
        const gone = new Promise((r) => proc.once('exit', r))
        proc.kill('SIGTERM')
        await gone
      }
      if (!keepHome) rmSync(home, {force: true, recursive: true})
    },
  }
}

/**
 * A throwaway redis-server on a free loopback port, with the append-only file fsynced on every write
 * (what cluster mode's default durability asks of Redis), in a temp directory removed by stop().
 */
export async function spawnPrivateRedis(): Promise<{url: string; port: number; proc: ChildProcess; stop(): Promise<void>}> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'mq-redis-'))
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--protected-mode', 'yes'], {stdio: ['ignore', 'pipe', 'pipe']})
  let log = ''
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new UnavailableError('E_BENCH_REDIS', `redis-server did not start:\n${log}`, {hint: 'Try this: apt-get install redis-server'})), 15_000)
    const onData = (d: Buffer) => {
      log += d.toString()
      if (log.includes('Ready to accept connections')) {
        clearTimeout(t)
        resolve()
      }
    }
    proc.stdout!.on('data', onData)
    proc.stderr!.on('data', onData)
    proc.once('error', (error) => {
      clearTimeout(t)
      reject(new UnavailableError('E_BENCH_REDIS', `cannot run redis-server: ${error.message}`, {hint: 'Try this: apt-get install redis-server'}))
    })
  })
  proc.stdout!.resume()
  proc.stderr!.resume()
  return {
    port,
    proc,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const gone = new Promise((r) => proc.once('exit', r))
        proc.kill('SIGKILL')
        await gone
      }
      rmSync(dir, {force: true, recursive: true})
    },
    url: `redis://127.0.0.1:${port}`,
  }
}

/**
 * `count` private brokers in cluster mode on one Redis, with certificates of one CA: the first node
 * creates it, the others start on copies of its pki directory.
 */
export async function spawnClusterNodes(count: number, redisUrl: string, name: string): Promise<Awaited<ReturnType<typeof spawnPrivateBroker>>[]> {
  const env = {MQ_BROKER_CLUSTER_NAME: name, MQ_BROKER_CLUSTER_URL: redisUrl}
  const nodes = [await spawnPrivateBroker({env})]
  try {
    for (let i = 1; i < count; i++) {
      const home = mkdtempSync(join(tmpdir(), 'mq-bench-'))
      cpSync(join(nodes[0].home, 'pki'), join(home, 'pki'), {recursive: true})
      nodes.push(await spawnPrivateBroker({env, home}))
    }
  } catch (error) {
    for (const n of nodes) await n.stop().catch(() => {})
    throw error
  }
  return nodes
}

/** CPU seconds a process has used so far (user + system), from /proc; 0 when it cannot be read. */
export function cpuSecondsOf(pid: number | undefined): number {
  return (pid ? cpuSeconds(pid) : null) ?? 0
}
