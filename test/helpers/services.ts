import {randomBytes} from 'node:crypto'
import {createServer} from 'node:net'

/** Real services on this machine's loopback; override with env for other setups. */
export const MYSQL_URL = process.env.MQ_TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306'
export const REDIS_URL = process.env.MQ_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

/** A unique name for this test run's database or key prefix. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
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
