import {type ChildProcess, spawn} from 'node:child_process'

import {BIN, ROOT} from '../../helpers/cli.js'

/** `mq <args>` as a long-running subprocess; resolves once `ready` appears on stderr. */
export async function spawnMq(args: string[], env: NodeJS.ProcessEnv, ready: string, timeoutMs = 60_000): Promise<{proc: ChildProcess; log: () => string; stop: (sig?: NodeJS.Signals) => Promise<number | null>}> {
  const proc = spawn(process.execPath, [BIN, ...args], {cwd: ROOT, env: {...process.env, NO_COLOR: '1', ...env}, stdio: ['ignore', 'ignore', 'pipe']})
  let log = ''
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${args.join(' ')} not ready:\n${log}`)), timeoutMs)
    proc.stderr!.on('data', (d: Buffer) => {
      log += d.toString()
      if (log.includes(ready)) {
        clearTimeout(t)
        resolve()
      }
    })
    proc.once('exit', (code) => {
      clearTimeout(t)
      reject(new Error(`${args.join(' ')} exited ${code}:\n${log}`))
    })
  })
  return {
    log: () => log,
    proc,
    stop: (sig = 'SIGTERM') =>
      new Promise((r) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return r(proc.exitCode)
        proc.once('exit', (code) => r(code))
        proc.kill(sig)
      }),
  }
}

