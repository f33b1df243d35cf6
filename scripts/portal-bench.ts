// GET /portal/messages over many records in MariaDB: latency per kind of page (keyset pages, deep
// cursors, filters), then requests/s over real HTTPS. Usage (after npm run build):
//   node dist/scripts/portal-bench.js [ROWS=1000000] [MYSQL_URL=mysql://root@127.0.0.1:3306]
// Makes and drops its own database; bounded in time (a few seconds per measurement).
import {Agent, request} from 'node:https'
import type {AddressInfo} from 'node:net'

import mysql from 'mysql2/promise'

import {MqHome} from '../src/lib/config/home.js'
import {configSchema} from '../src/lib/config/schema.js'
import {buildPortalApp} from '../src/lib/portal/app.js'
import {portalCa} from '../src/lib/portal/ca.js'
import {TokenService, loadSigningKey} from '../src/lib/portal/tokens.js'
import {CertificateAuthority, serverTlsOptions} from '../src/lib/pki/index.js'
import {RecordsStore} from '../src/lib/records/store.js'
import {mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

const ROWS = Number(process.argv[2] ?? 1_000_000)
const BASE = (process.argv[3] ?? 'mysql://root@127.0.0.1:3306').replace(/\/$/, '')
const CLIENTS = 50

const pct = (xs: number[], p: number) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]
const fmt = (ms: number) => `${ms.toFixed(2)} ms`

async function main() {
  const dbName = `mqbench_${process.pid}`
  const admin = await mysql.createConnection(BASE)
  await admin.query(`CREATE DATABASE \`${dbName}\``)
  const dir = mkdtempSync(join(tmpdir(), 'mq-portal-bench-'))
  const home = new MqHome(dir)
  const config = configSchema.parse({pki: {ca_key_bits: 3072}, store: {url: `${BASE}/${dbName}`}})
  let store: RecordsStore | undefined
  try {
    const ca = CertificateAuthority.open(home, config.pki)
    await ca.ensureDevelopment({servers: ['portal-server']})
    store = await RecordsStore.open({config, home})
    let t = Date.now()
    // MariaDB's sequence engine makes the rows server-side: one statement per 100k rows
    for (let from = 1; from <= ROWS; from += 100_000) {
      const to = Math.min(ROWS, from + 99_999)
      await store.sql.run(
        `INSERT INTO messages (message_id, client_id, sender_hash, sender_masked, body_enc, key_version, status, attempts, queued_at, updated_at)
         SELECT CONCAT('m', seq), CONCAT('client', seq % ${CLIENTS}), SHA2(seq, 256), '+4915****0000', UNHEX('00'), 1,
                ELT(1 + seq % 4, 'queued', 'processing', 'delivered', 'failed'), 0,
                DATE_FORMAT(TIMESTAMP('2026-01-01') + INTERVAL seq SECOND, '%Y-%m-%dT%H:%i:%s.000Z'),
                DATE_FORMAT(TIMESTAMP('2026-01-01') + INTERVAL seq SECOND, '%Y-%m-%dT%H:%i:%s.000Z')
         FROM seq_${from}_to_${to}`,
      )
    }
    console.log(`inserted ${ROWS} messages (${CLIENTS} clients) in ${((Date.now() - t) / 1000).toFixed(1)} s`)
    await store.sql.run('ANALYZE TABLE messages')
    await store.createUser('admin@bench.example', 'bench password', 'admin')
    await store.createUser('user@bench.example', 'bench password', 'user', 'client7')
    const tokens = new TokenService(store, loadSigningKey(home), {accessS: 900, refreshS: 3600})
    const app = await buildPortalApp({ca: portalCa(ca, store), config, store, tokens})
    const login = async (email: string) => (await app.inject({method: 'POST', payload: {email, password: 'bench password'}, url: '/portal/auth/login'})).json().access_token as string
    const userToken = await login('user@bench.example')
    const adminToken = await login('admin@bench.example')
    const get = async (url: string, token: string) => {
      const r = await app.inject({headers: {authorization: `Bearer ${token}`}, method: 'GET', url})
      if (r.statusCode !== 200) throw new Error(`${url}: ${r.statusCode} ${r.body}`)
      return r.json() as {messages: unknown[]; next: string | null}
    }
    // a cursor deep into the table: the page after message N
    const cursorAt = (seq: number) => Buffer.from(`${new Date(Date.parse('2026-01-01T00:00:00Z') + seq * 1000).toISOString()}|${seq}`).toString('base64url')
    const kinds: [string, string, () => string][] = [
      ['user: first page (50)', userToken, () => '/portal/messages?limit=50'],
      ['user: random deep page', userToken, () => `/portal/messages?limit=50&cursor=${cursorAt(Math.floor(Math.random() * ROWS))}`],
      ['user: status=failed, deep', userToken, () => `/portal/messages?limit=50&status=failed&cursor=${cursorAt(Math.floor(Math.random() * ROWS))}`],
      ['user: date range (1 day)', userToken, () => `/portal/messages?limit=50&from=2026-01-05T00:00:00Z&to=2026-01-06T00:00:00Z`],
      ['admin: all clients, deep page', adminToken, () => `/portal/messages?limit=50&cursor=${cursorAt(Math.floor(Math.random() * ROWS))}`],
      ['admin: status=delivered, deep', adminToken, () => `/portal/messages?limit=50&status=delivered&cursor=${cursorAt(Math.floor(Math.random() * ROWS))}`],
      ['admin: one client, 200 per page', adminToken, () => `/portal/messages?limit=200&client=client3&cursor=${cursorAt(Math.floor(Math.random() * ROWS))}`],
    ]
    console.log('\nGET /portal/messages (in-process inject, MariaDB), 100 requests each:')
    for (const [name, token, url] of kinds) {
      for (let i = 0; i < 5; i++) await get(url(), token)
      const ms: number[] = []
      for (let i = 0; i < 100; i++) {
        t = performance.now()
        const r = await get(url(), token)
        ms.push(performance.now() - t)
        if (r.messages.length === 0 && !name.includes('range')) throw new Error(`${name}: empty page`)
      }
      console.log(`  ${name.padEnd(34)} p50 ${fmt(pct(ms, 50))}  p99 ${fmt(pct(ms, 99))}  max ${fmt(Math.max(...ms))}`)
    }
    // real HTTPS, keep-alive, 16 in flight, 4 s per route (client and server share the 2 cores)
    const {requestCert: _r, rejectUnauthorized: _u, crl: _c, ...tls} = serverTlsOptions(home, 'portal-server')
    const https = await buildPortalApp({ca: portalCa(ca, store), config, store, tokens}, {https: tls})
    await https.listen({host: '127.0.0.1', port: 0})
    const port = (https.server.address() as AddressInfo).port
    const agent = new Agent({ca: readFileSync(home.caCert), keepAlive: true, maxSockets: 16})
    const once = (path: string, token: string) =>
      new Promise<number>((resolve, reject) => {
        const req = request({agent, headers: {authorization: `Bearer ${token}`}, host: '127.0.0.1', path, port}, (res) => {
          res.resume()
          res.on('end', () => resolve(res.statusCode ?? 0))
        })
        req.on('error', reject)
        req.end()
      })
    console.log('\nthroughput over HTTPS (16 concurrent, keep-alive, 4 s each):')
    for (const [name, path] of [['GET /portal/profile', '/portal/profile'], ['GET /portal/messages (first page)', '/portal/messages?limit=50']]) {
      const end = Date.now() + 4000
      let n = 0
      const started = Date.now()
      await Promise.all(Array.from({length: 16}, async () => {
        while (Date.now() < end) {
          if ((await once(path, userToken)) !== 200) throw new Error(`${path} failed`)
          n++
        }
      }))
      console.log(`  ${name.padEnd(34)} ${Math.round(n / ((Date.now() - started) / 1000))} req/s`)
    }
    agent.destroy()
    await https.close()
    await app.close()
  } finally {
    await store?.close()
    await admin.query(`DROP DATABASE IF EXISTS \`${dbName}\``)
    await admin.end()
    rmSync(dir, {force: true, recursive: true})
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
