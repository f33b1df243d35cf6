import {type ChildProcess, spawn} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {UnavailableError} from '../errors.js'
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
