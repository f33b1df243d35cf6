import {spawn} from 'node:child_process'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const BIN = fileURLToPath(new URL('../../../bin/run.js', import.meta.url))

/**
 * Tests never see the contexts of whoever runs them (~/.config/mq/contexts.yaml would pick a broker):
 * XDG_CONFIG_HOME points at a directory that holds none, unless a test gives its own.
 */
export const NO_CONTEXTS = {XDG_CONFIG_HOME: join(tmpdir(), 'mq-test-no-contexts')}

export interface CliResult {
  code: number
  stdout: string
  stderr: string
  stdoutBytes: Buffer
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv
  home?: string
  input?: string | Buffer
  cwd?: string
  timeoutMs?: number
}

/** Runs the built CLI (bin/run.js) as a subprocess, as a user or a script would. */
export function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = {...process.env, NO_COLOR: '1', ...NO_CONTEXTS, ...opts.env}
    if (opts.home) env.MQ_HOME = opts.home
    const child = spawn(process.execPath, [BIN, ...args], {cwd: opts.cwd ?? ROOT, env, stdio: ['pipe', 'pipe', 'pipe']})
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (d: Buffer) => out.push(d))
    child.stderr.on('data', (d: Buffer) => err.push(d))
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const stdoutBytes = Buffer.concat(out)
      resolve({code: code ?? (signal ? 128 : 1), stderr: Buffer.concat(err).toString(), stdout: stdoutBytes.toString(), stdoutBytes})
    })
    child.stdin.on('error', () => {})
    if (opts.input !== undefined) child.stdin.end(opts.input)
    else child.stdin.end()
  })
}

/** Spawns a long-running mq server (bin/run.js ARGS) and resolves once its stderr shows `ready`. */
export async function spawnUntilReady(args: string[], env: NodeJS.ProcessEnv, ready: string, timeoutMs = 60_000): Promise<{proc: import('node:child_process').ChildProcess; log: () => string; stop: () => Promise<void>}> {
  const proc = spawn(process.execPath, [BIN, ...args], {cwd: ROOT, env: {...process.env, NO_COLOR: '1', ...NO_CONTEXTS, ...env}, stdio: ['ignore', 'ignore', 'pipe']})
  let err = ''
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${args.slice(0, 2).join(' ')} did not start within ${timeoutMs} ms:\n${err}`)), timeoutMs)
    const check = () => err.includes(ready) && (clearTimeout(t), resolve())
    proc.stderr!.on('data', check)
    proc.once('exit', (code) => (clearTimeout(t), reject(new Error(`${args.slice(0, 2).join(' ')} exited ${code}:\n${err}`))))
  })
  return {
    log: () => err,
    proc,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      const done = new Promise((r) => proc.once('exit', r))
      proc.kill('SIGTERM')
      await done
    },
  }
}
