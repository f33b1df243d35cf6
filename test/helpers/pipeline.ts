import {type ChildProcess, spawn} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {createServer, type Server} from 'node:https'
import type {TLSSocket} from 'node:tls'

import type {ApiPlugin, BrokerPublisher} from '../../src/lib/broker/api-types.js'
import type {MqHome} from '../../src/lib/config/home.js'
import {MqError} from '../../src/lib/errors.js'
import {errorBody} from '../../src/lib/http/errors.js'
import {peerIdentity, serverTlsOptions} from '../../src/lib/pki/index.js'
import {freePort, waitFor} from './services.js'

/**
 * A stand-in for the broker's HTTPS API that mounts ApiPlugins the same way (mutual TLS, CN
 * identity, roles by name), for pipeline tests that do not need the whole broker.
 */
export async function pluginServer(home: MqHome, plugins: ApiPlugin[], port?: number): Promise<{url: string; port: number; server: Server; close: () => Promise<void>}> {
  const p = port ?? (await freePort())
  const server = createServer(serverTlsOptions(home, 'broker'), (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', async () => {
      const who = peerIdentity(req.socket as TLSSocket)
      const u = new URL(req.url ?? '/', 'https://x')
      if (u.pathname === '/health') {
        res.writeHead(200, {'content-type': 'application/json'})
        return res.end('{"status":"ok"}')
      }
      const roles = who ? ['proxy', 'worker', 'admin'].filter((r) => who.cn.startsWith(r)) : []
      for (const pl of plugins) {
        for (const r of pl.routes) {
          if (r.method !== req.method) continue
          const names: string[] = []
          const re = new RegExp('^' + r.path.replace(/:([a-z]+)/g, (_m, n) => (names.push(n), '([^/]+)')) + '$')
          const mm = re.exec(u.pathname)
          if (!mm) continue
          const params = Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(mm[i + 1])]))
          const out = await r.handler({body: Buffer.concat(chunks), headers: req.headers, method: req.method!, params, path: u.pathname, query: u.searchParams}, {identity: who?.cn ?? null, remote: req.socket.remoteAddress ?? '', roles})
          const data = JSON.stringify(out.body ?? null)
          res.writeHead(out.status, {'content-type': 'application/json', ...out.headers})
          return res.end(data)
        }
      }
      res.writeHead(404, {'content-type': 'application/json'})
      res.end(JSON.stringify(errorBody(new Error('x'))))
    })
  })
  await new Promise<void>((r) => server.listen(p, '127.0.0.1', r))
  return {
    async close() {
      await new Promise<void>((r) => {
        server.close(() => r())
        server.closeAllConnections()
      })
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
