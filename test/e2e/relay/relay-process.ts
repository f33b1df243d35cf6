import {type ChildProcess, spawn} from 'node:child_process'
import {readFileSync} from 'node:fs'

import {BIN, ROOT} from '../../helpers/cli.js'

export interface RelayProcess {
  proc: ChildProcess
  pid: number
  stderr: () => string
  /** SIGTERM, then the exit code */
  stop: () => Promise<number | null>
}

/** Runs `mq relay start` as a subprocess and waits for its "relay listening" line. */
export async function spawnRelay(opts: {home: string; args?: string[]; cwd?: string; env?: NodeJS.ProcessEnv}): Promise<RelayProcess> {
  const proc = spawn(process.execPath, [BIN, 'relay', 'start', ...(opts.args ?? [])], {
    cwd: opts.cwd ?? ROOT,
    env: {...process.env, MQ_HOME: opts.home, NO_COLOR: '1', ...opts.env},
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let err = ''
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString()
  })
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL')
      reject(new Error(`relay did not start:\n${err}`))
    }, 20_000)
    const check = () => {
      if (/relay listening/.test(err)) {
        clearTimeout(timer)
        proc.stderr!.off('data', check)
        resolve()
      }
    }
    proc.stderr!.on('data', check)
    proc.on('exit', () => {
      clearTimeout(timer)
      reject(new Error(`relay exited:\n${err}`))
    })
  })
  return {
    pid: proc.pid!,
    proc,
    stderr: () => err,
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM')
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000)
      const code = await exited
      clearTimeout(t)
      return code
    },
  }
}

/** Peak resident memory (VmHWM) of a process in bytes, from /proc. */
export function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!m) throw new Error('no VmHWM')
  return Number(m[1]) * 1024
}
