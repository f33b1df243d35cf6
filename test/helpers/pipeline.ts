import {type ChildProcess, spawn} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {createServer, type Server} from 'node:https'

import type {ApiPlugin, BrokerPublisher} from '../../src/lib/broker/api-types.js'
import {buildApiApp} from '../../src/lib/broker/api/app.js'
import type {ResolvedPermissions} from '../../src/lib/broker/permissions.js'
import type {MqHome} from '../../src/lib/config/home.js'
import {MqError} from '../../src/lib/errors.js'
import {silentLogger} from '../../src/lib/log.js'
import {serverTlsOptions} from '../../src/lib/pki/index.js'
import {freePort, waitFor} from './services.js'

/**
 * A stand-in for the broker's HTTPS API that mounts ApiPlugins the same way (the API's fastify
 * app: mutual TLS, CN identity, roles), with roles by name (proxy*, worker*, admin*) and a
 * /health that always says ok, for pipeline tests that do not need the whole broker.
 */
export async function pluginServer(home: MqHome, plugins: ApiPlugin[], port?: number): Promise<{url: string; port: number; server: Server; close: () => Promise<void>}> {
  const p = port ?? (await freePort())
  const server = createServer({...serverTlsOptions(home, 'broker'), rejectUnauthorized: false, requestCert: true})
  const app = buildApiApp({
    logger: silentLogger,
    maxBody: 1024 * 1024,
    permissionsFor: (cn) => ({roles: ['proxy', 'worker', 'admin'].filter((r) => cn.startsWith(r))}) as ResolvedPermissions,
    routes: [
      async (a) => {
        a.get('/health', {config: {anonymous: true}}, async () => ({status: 'ok'}))
      },
      ...plugins.map((pl) => pl.routes),
    ],
    serverFactory: (handler) => server.on('request', handler),
  })
  await app.ready()
  await new Promise<void>((r) => server.listen(p, '127.0.0.1', r))
  return {
    async close() {
      await new Promise<void>((r) => {
        server.close(() => r())
        server.closeAllConnections()
      })
      await app.close()
    },
    port: p,
    server,
    url: `https://127.0.0.1:${p}`,
  }
}

/** Records what the pipeline publishes, as the broker's in-process publisher would receive it. */
export function memoryPublisher(): BrokerPublisher & {published: {exchange: string; key: string; body: Buffer; id?: string}[]; fail: boolean} {
  const self = {
    fail: false,
    async publish(exchange: string, key: string, body: Buffer, o?: {messageId?: string}) {
      if (self.fail) throw new MqError('E_UNROUTABLE', 'broker publish failed')
      self.published.push({body, exchange, id: o?.messageId, key})
      return {messageId: o?.messageId ?? '', queues: ['q']}
    },
    published: [] as {exchange: string; key: string; body: Buffer; id?: string}[],
  }
  return self
}

/** A private redis-server on a free port, so tests may stop and restart it; `persistence: false` (or `aof: false`) = neither AOF nor RDB (a restart loses everything). */
export async function privateRedis(opts: {persistence?: boolean; aof?: boolean} = {}): Promise<{url: string; port: number; stop: () => Promise<void>; start: () => Promise<void>; kill: () => Promise<void>; destroy: () => Promise<void>}> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'mq-redis-'))
  let child: ChildProcess | undefined
  const start = async () => {
    const aof = opts.persistence === false || opts.aof === false ? ['--appendonly', 'no'] : ['--appendonly', 'yes', '--appendfsync', 'always']
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', ...aof, '--protected-mode', 'yes'], {stdio: 'ignore'})
    const {Redis} = await import('ioredis')
    await waitFor(async () => {
      const r = new Redis({lazyConnect: true, port, retryStrategy: () => null})
      r.on('error', () => {})
      try {
        await r.connect()
        await r.ping()
        return true
      } catch {
        return false
      } finally {
        r.disconnect()
      }
    }, 10_000, 50)
  }
  const halt = async (signal: NodeJS.Signals) => {
    const c = child
    child = undefined
    if (!c || c.exitCode !== null) return
    await new Promise<void>((r) => {
      c.once('exit', () => r())
      c.kill(signal)
    })
  }
  await start()
  return {
    kill: () => halt('SIGKILL'),
    port,
    start,
    /** a clean shutdown (data kept in the append-only file) */
    stop: () => halt('SIGTERM'),
    async destroy() {
      await halt('SIGKILL')
      rmSync(dir, {force: true, recursive: true})
    },
    url: `redis://127.0.0.1:${port}`,
  }
}

/** A private MariaDB server (own datadir, free port) that a test may stop and restart. */
export async function privateMariadb(): Promise<{url: string; port: number; stop: () => Promise<void>; start: () => Promise<void>; destroy: () => Promise<void>; signal: (sig: NodeJS.Signals) => void}> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'mq-mariadb-'))
  const {execFileSync} = await import('node:child_process')
  execFileSync('mariadb-install-db', ['--no-defaults', `--datadir=${join(dir, 'data')}`, '--auth-root-authentication-method=normal', '--skip-test-db', '--user=root'], {stdio: 'ignore'})
  let child: ChildProcess | undefined
  const mysql = await import('mysql2/promise')
  const start = async () => {
    child = spawn('mariadbd', ['--no-defaults', `--datadir=${join(dir, 'data')}`, `--port=${port}`, '--bind-address=127.0.0.1', `--socket=${join(dir, 'sock')}`, `--pid-file=${join(dir, 'pid')}`, '--user=root', '--skip-log-bin', '--innodb-buffer-pool-size=16M', '--skip-name-resolve'], {stdio: 'ignore'})
    await waitFor(async () => {
      try {
        const c = await mysql.createConnection({host: '127.0.0.1', port, user: 'root'})
        await c.query('CREATE DATABASE IF NOT EXISTS mq')
        await c.end()
        return true
      } catch {
        return false
      }
    }, 30_000, 100)
  }
  const halt = async () => {
    const c = child
    child = undefined
    if (!c || c.exitCode !== null) return
    await new Promise<void>((r) => {
      c.once('exit', () => r())
      c.kill('SIGTERM')
    })
  }
  await start()
  return {
    async destroy() {
      await halt()
      rmSync(dir, {force: true, recursive: true})
    },
    port,
    /** SIGSTOP / SIGCONT: a hung server that keeps its connections open */
    signal: (sig: NodeJS.Signals) => void child?.kill(sig),
    start,
    stop: halt,
    url: `mysql://root@127.0.0.1:${port}/mq`,
  }
}
