import {randomBytes, randomInt} from 'node:crypto'
import {readFileSync} from 'node:fs'
import {createServer} from 'node:net'

/** Real services on this machine's loopback; override with env for other setups. */
export const MYSQL_URL = process.env.MQ_TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306'
export const REDIS_URL = process.env.MQ_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

/** A unique name for this test run's database or key prefix. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`
}

/**
 * A free TCP port on 127.0.0.1, below the kernel's ephemeral range. A port the kernel handed out
 * for listen(0) lies inside that range, so between our probe and the server's own bind the local end
 * of any outgoing connection (a client, a Redis or MySQL pool) could take it: the full suite then
 * failed with "the port is in use". Ports below the range are only ever taken by an explicit bind.
 */
export async function freePort(): Promise<number> {
  const low = ephemeralStart()
  const base = 10_000
  for (let i = 0; i < 64 && low - base > 1000; i++) {
    const port = base + randomInt(low - base)
    if (await canListen(port)) return port
  }
  return listenPort(0)
}

/**
 * A free port whose Redis Cluster bus port (port + 10000) is free too, both below the ephemeral range:
 * with freePort() the bus port could land in that range, where an outgoing connection's local end may
 * hold it, and redis-server then exits at start (seen once in a full run).
 */
export async function freeClusterPort(): Promise<number> {
  const BUS = 10_000
  const low = ephemeralStart() - BUS
  const base = 10_000
  for (let i = 0; i < 64 && low - base > 1000; i++) {
    const port = base + randomInt(low - base)
    if ((await canListen(port)) && (await canListen(port + BUS))) return port
  }
  throw new Error(`no free port pair (port, port + ${BUS}) below ${low + BUS}`)
}

/** the first port of the kernel's ephemeral range (ip_local_port_range) */
function ephemeralStart(): number {
  try {
    const lo = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
    if (lo > 0) return lo
  } catch {
    // not Linux: the common default
  }
  return 32_768
}

function canListen(port: number): Promise<boolean> {
  return listenPort(port).then(
    () => true,
    () => false,
  )
}

function listenPort(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(port, '127.0.0.1', () => {
      const addr = srv.address()
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))))
    })
  })
}

/** Creates a fresh MySQL/MariaDB database; drop() removes it. */
export async function tempMysqlDatabase(): Promise<{url: string; name: string; drop: () => Promise<void>}> {
  const mysql = await import('mysql2/promise')
  const name = uniqueName('mqtest')
  const conn = await mysql.createConnection(MYSQL_URL)
  await conn.query(`CREATE DATABASE \`${name}\``)
  await conn.end()
  return {
    name,
    url: `${MYSQL_URL.replace(/\/$/, '')}/${name}`,
    async drop() {
      const c = await mysql.createConnection(MYSQL_URL)
      await c.query(`DROP DATABASE IF EXISTS \`${name}\``)
      await c.end()
    },
  }
}

export async function waitFor(pred: () => boolean | Promise<boolean>, timeoutMs = 10_000, stepMs = 25): Promise<void> {
  const end = Date.now() + timeoutMs
  for (;;) {
    if (await pred()) return
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, stepMs))
  }
}
