import {type ChildProcess, spawn} from 'node:child_process'
import {writeFileSync} from 'node:fs'
import {join} from 'node:path'

import {BrokerClient} from '../../src/lib/client/client.js'
import {Engine, type EngineOptions} from '../../src/lib/broker/engine.js'
import type {ResolvedPermissions} from '../../src/lib/broker/permissions.js'
import {BrokerServer} from '../../src/lib/broker/server.js'
import {type Logger, silentLogger} from '../../src/lib/log.js'
import {MqHome} from '../../src/lib/config/home.js'
import {clientTlsOptions} from '../../src/lib/pki/index.js'
import {BIN, NO_CONTEXTS, ROOT} from './cli.js'
import {tempHome} from './home.js'
import {freePort} from './services.js'

export interface BrokerProcess {
  home: string
  port: number
  apiPort: number
  ciphermqPort?: number
  proc: ChildProcess
  /** everything the broker wrote to stderr so far */
  log(): string
  /** a client over mutual TLS with pki/issued/<identity> (default admin) */
  connect(identity?: string, opts?: {timeoutMs?: number; batchConfirms?: boolean}): Promise<BrokerClient>
  /** env for runCli() against this broker */
  cliEnv(): NodeJS.ProcessEnv
  /** SIGKILL, as a crash would */
  kill9(): Promise<void>
  /** SIGTERM and wait (graceful) */
  stop(): Promise<void>
  /** start again on the same home and ports */
  restart(): Promise<void>
  /** stop and remove the temp home (if this helper created it) */
  cleanup(): Promise<void>
}

/**
 * Spawns `node bin/run.js broker start` on free ports with a temp MQ_HOME (dev CA on first start)
 * and waits for its "broker ready" log line. `env` adds MQ_* config overrides.
 */
export async function spawnBroker(opts: {home?: string; env?: NodeJS.ProcessEnv; ciphermq?: boolean; portsInConfig?: boolean; extraConfig?: string} = {}): Promise<BrokerProcess> {
  const own = opts.home ? undefined : tempHome('mq-broker-')
  const home = opts.home ?? own!.dir
  const port = await freePort()
  const apiPort = await freePort()
  const ciphermqPort = opts.ciphermq ? await freePort() : undefined
  let stderr = ''
  let proc!: ChildProcess
  // portsInConfig: the ports go in $MQ_HOME/config.yaml, as a user moving a home would do, and clients follow them
  if (opts.portsInConfig) writeFileSync(join(home, 'config.yaml'), `broker:\n  port: ${port}\n  api_port: ${apiPort}\n${opts.extraConfig ?? ''}`)
  const start = async () => {
    const args = [BIN, 'broker', 'start', '--home', home, ...(opts.portsInConfig ? [] : ['--port', String(port), '--api-port', String(apiPort)])]
    if (ciphermqPort) args.push('--ciphermq', '--ciphermq-port', String(ciphermqPort))
    proc = spawn(process.execPath, args, {cwd: ROOT, env: {...process.env, NO_COLOR: '1', ...NO_CONTEXTS, ...opts.env}, stdio: ['ignore', 'ignore', 'pipe']})
    const p = proc
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`broker did not start within 90 s:\n${stderr}`)), 90_000)
      p.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString()
        if (stderr.includes('broker ready')) {
          clearTimeout(t)
          resolve()
        }
      })
      p.once('exit', (code) => {
        clearTimeout(t)
        reject(new Error(`broker exited with ${code}:\n${stderr}`))
      })
    })
  }
  const exited = () => new Promise<void>((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once('exit', () => r())))
  await start()
  const b: BrokerProcess = {
    apiPort,
    async cleanup() {
      await b.stop()
      own?.cleanup()
    },
    ciphermqPort,
    cliEnv: () => ({MQ_BROKER: `127.0.0.1:${port}`, MQ_HOME: home}),
    connect: (identity = 'admin', o = {}) =>
      BrokerClient.connect({batchConfirms: o.batchConfirms, host: '127.0.0.1', port, timeoutMs: o.timeoutMs ?? 15_000, tls: {...clientTlsOptions(new MqHome(home), identity), checkServerIdentity: () => undefined}}),
    home,
    async kill9() {
      proc.kill('SIGKILL')
      await exited()
    },
    log: () => stderr,
    port,
    get proc() {
      return proc
    },
    async restart() {
      stderr = ''
      await start()
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM')
        await exited()
      }
    },
  }
  return b
}

/** An in-process broker server over plain TCP (no TLS), for tests of the protocol and permissions. */
export async function startPlainServer(opts: {
  permissionsFor: (identity: string) => ResolvedPermissions
  logger?: Logger
  limits?: Partial<ConstructorParameters<typeof BrokerServer>[0]['limits']>
  /** engine options; with any given, the engine's timers (TTL sweep, memory watermark) run too */
  engine?: EngineOptions
}): Promise<{engine: Engine; server: BrokerServer; port: number; stop: () => Promise<void>}> {
  const engine = new Engine(opts.engine)
  if (opts.engine) engine.start()
  const server = new BrokerServer({
    engine,
    keys: {get: () => null, put: () => {}},
    limits: {handshakeTimeoutMs: 5000, heartbeatMs: 0, maxPayload: 1 << 20, maxUnconfirmed: 100, ...opts.limits},
    logger: opts.logger ?? silentLogger,
    permissionsFor: opts.permissionsFor,
  })
  const port = await server.listen(0, '127.0.0.1')
  return {
    engine,
    port,
    server,
    async stop() {
      await server.close()
      engine.stop()
    },
  }
}
