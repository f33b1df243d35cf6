// The operators' portal under load, as a user runs it: `mq portal start` in its own process on a
// records store of ROWS messages in MariaDB, the load from `wrk` (a separate, cheap process).
//
// On a quiet machine (after `npm run build`; needs `apt-get install -y wrk` and MariaDB on 3306):
//   node dist/scripts/portal-bench.js --rows 1000000
// It prints (1) GET /portal/messages latency per kind of page (keyset pages, deep cursors, filters;
// one request at a time over HTTPS), then (2) one table per route: req/s, p50, p99, errors (any
// answer but 200, and socket errors: a figure counts only with 0 errors) and the server's CPU time
// per request (from /proc, independent of other load on the machine); login is listed apart, as
// scrypt bounds it. Other options:
//   --mysql mysql://root@127.0.0.1:3306   server (a database mqbench_<pid> is made and dropped)
//   --seconds 10 --connections 32          per route, wrk -t1 -cN -dS
//   --bin bin/run.js                       the mq to run as the server
//   --ab /tmp/main/bin/run.js              A/B: a second server from another build on the same store;
//                                          each route alternates A,B,A,B (--rounds 3) and the table
//                                          adds CPU per request of both and their ratio (B/A)
//   --only profile,stats                   a subset of the routes (matched against their names)
//   --node-args="--cpu-prof --cpu-prof-dir=/tmp/prof"  flags for the server's node (profiles)
import {spawn, spawnSync, type ChildProcess} from 'node:child_process'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {Agent, request} from 'node:https'
import {type AddressInfo, createServer} from 'node:net'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'
import {parseArgs} from 'node:util'

import mysql from 'mysql2/promise'

import {MqHome} from '../src/lib/config/home.js'
import {configSchema} from '../src/lib/config/schema.js'
import {CertificateAuthority} from '../src/lib/pki/index.js'
import {RecordsStore} from '../src/lib/records/store.js'

const {values: args, positionals} = parseArgs({
  allowPositionals: true,
  options: {
    ab: {type: 'string'},
    bin: {default: 'bin/run.js', type: 'string'},
    connections: {default: '32', type: 'string'},
    'node-args': {type: 'string'},
    mysql: {default: 'mysql://root@127.0.0.1:3306', type: 'string'},
    only: {type: 'string'},
    rounds: {type: 'string'},
    rows: {type: 'string'},
    seconds: {default: '10', type: 'string'},
  },
})
const ROWS = Number(args.rows ?? positionals[0] ?? 1_000_000)
const BASE = args.mysql.replace(/\/$/, '')
const SECONDS = Number(args.seconds)
const CONNECTIONS = Number(args.connections)
const ROUNDS = Number(args.rounds ?? (args.ab ? 3 : 1))
const CLIENTS = 50
const PASSWORD = 'bench password'
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK']).stdout.toString().trim() || 100)

const pct = (xs: number[], p: number) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]
const median = (xs: number[]) => pct(xs, 50)
const ms = (v: number) => `${v.toFixed(2)} ms`
const rate = (v: number) => (v < 100 ? v.toFixed(1) : String(Math.round(v)))

/** utime + stime of a process, in seconds */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / CLK_TCK
}

interface Server {
  label: string
  url: string
  pid: number
  stop(): Promise<void>
}

/** `mq portal start` as a user runs it, on a free port; resolves on "portal ready". */
async function startServer(label: string, bin: string, home: string): Promise<Server> {
  const port = await new Promise<number>((done, fail) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const {port} = probe.address() as AddressInfo
      probe.close(() => done(port))
    })
    probe.once('error', fail)
  })
  return new Promise((resolve_, reject) => {
    const child: ChildProcess = spawn(process.execPath, [...(args['node-args']?.split(' ').filter(Boolean) ?? []), resolve(bin), 'portal', 'start', '--home', home, '--port', String(port), '--api', 'https://127.0.0.1:1'], {
      env: {...process.env, NODE_ENV: 'production'},
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let log = ''
    const onData = (b: Buffer) => {
      log += b.toString()
      const m = /portal ready.*\burl=(https:\/\/127\.0\.0\.1:\d+)/.exec(log)
      if (m) {
        child.stdout!.off('data', onData)
        child.stderr!.off('data', onData)
        child.stdout!.resume()
        child.stderr!.resume()
        resolve_({
          label,
          pid: child.pid!,
          stop: () => new Promise<void>((done) => {
            if (child.exitCode !== null) return done()
            child.once('exit', () => done())
            child.kill('SIGTERM')
          }),
          url: m[1],
        })
      }
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', onData)
    child.once('exit', (code) => reject(new Error(`${label}: mq portal start exited (${code}):\n${log}`)))
  })
}

// wrk counts every answer that is not a 200 (its own "status" error counts only >= 400) and prints one JSON line
const WRK_LUA = `
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non200 = 0 end
function response(status, headers, body) if status ~= 200 then non200 = non200 + 1 end end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non200") end
  local e = summary.errors
  io.write(string.format('WRK {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non200":%d,"socket_errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), bad, e.connect + e.read + e.write + e.timeout))
end
`

interface Run {
  rps: number
  p50: number
  p99: number
  errors: number
  requests: number
  cpuMsPerReq: number
}

function wrk(server: Server, route: Route, lua: string, seconds: number, connections: number): Promise<Run> {
  return new Promise((resolve_, reject) => {
    const cpu0 = cpuSeconds(server.pid)
    const wargs = ['-t1', `-c${route.connections ?? connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', lua, '-H', `Authorization: Bearer ${route.token}`]
    if (route.body !== undefined) wargs.push('-H', 'Content-Type: application/json')
    const child = spawn('wrk', [...wargs, `${server.url}${route.path}`], {env: {...process.env, BENCH_METHOD: route.method ?? 'GET', BENCH_BODY: route.body ?? ''}, stdio: ['ignore', 'pipe', 'pipe']})
    let out = ''
    child.stdout.on('data', (b: Buffer) => (out += b.toString()))
    child.stderr.on('data', (b: Buffer) => (out += b.toString()))
    child.once('error', reject)
    child.once('exit', () => {
      const cpu = cpuSeconds(server.pid) - cpu0
      const m = /^WRK (.*)$/m.exec(out)
      if (!m) return reject(new Error(`wrk failed:\n${out}`))
      const r = JSON.parse(m[1])
      resolve_({
        cpuMsPerReq: r.requests > 0 ? (cpu * 1000) / r.requests : Number.NaN,
        errors: r.non200 + r.socket_errors,
        p50: r.p50_us / 1000,
        p99: r.p99_us / 1000,
        requests: r.requests,
        rps: r.requests / (r.duration_us / 1e6),
      })
    })
  })
}

interface Route {
  name: string
  path: string
  token: string
  method?: string
  body?: string
  /** fewer than --connections: logins queue for scrypt (one per core at a time) */
  connections?: number
  /** longer than --seconds, and no warm-up: a login takes a scrypt (0.3 s quiet, seconds under load) */
  seconds?: number
}

function https(agent: Agent, url: string, opts: {method?: string; token?: string; body?: unknown} = {}): Promise<{status: number; text: string}> {
  return new Promise((resolve_, reject) => {
    const data = opts.body === undefined ? undefined : JSON.stringify(opts.body)
    const req = request(url, {agent, headers: {...(data ? {'content-type': 'application/json'} : {}), ...(opts.token ? {authorization: `Bearer ${opts.token}`} : {})}, method: opts.method ?? 'GET'}, (res) => {
      let text = ''
      res.on('data', (c: Buffer) => (text += c.toString()))
      res.on('end', () => resolve_({status: res.statusCode ?? 0, text}))
    })
    req.on('error', reject)
    req.end(data)
  })
}

async function main() {
  if (spawnSync('wrk', ['-v']).error) throw new Error('wrk is not installed (apt-get install -y wrk)')
  const dbName = `mqbench_${process.pid}`
  const admin = await mysql.createConnection(BASE)
  await admin.query(`CREATE DATABASE \`${dbName}\``)
  const dir = mkdtempSync(join(tmpdir(), 'mq-portal-bench-'))
  const home = new MqHome(dir)
  writeFileSync(home.config, `store:\n  url: ${BASE}/${dbName}\n`)
  const config = configSchema.parse({pki: {ca_key_bits: 3072}, store: {url: `${BASE}/${dbName}`}})
  const lua = join(dir, 'bench.lua')
  // a POST body (login) is set from the environment, so the token never sits in the script
  writeFileSync(lua, `wrk.method = os.getenv("BENCH_METHOD")\nlocal b = os.getenv("BENCH_BODY")\nif b ~= "" then wrk.body = b end\n${WRK_LUA}`)
  const servers: Server[] = []
  let store: RecordsStore | undefined
  const agent = new Agent({ca: undefined, keepAlive: true, maxSockets: 1, rejectUnauthorized: false})
  try {
    const ca = CertificateAuthority.open(home, config.pki)
    await ca.ensureDevelopment({clients: ['portal'], servers: ['portal-server']})
    // a realistic inventory for GET /admin/certificates
    for (let i = 0; i < 10; i++) await ca.issue(`client${i}`, {type: 'client'})
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
    await store.createUser('admin@bench.example', PASSWORD, 'admin')
    await store.createUser('user@bench.example', PASSWORD, 'user', 'client7')
    for (let i = 0; i < 30; i++) await store.createUser(`user${i}@bench.example`, PASSWORD, 'user', `client${i}`)
    // audit rows for GET /admin/audit (as logins would leave them)
    for (let i = 0; i < 300; i++) await store.audit({actor: `user${i % 30}@bench.example`, event_type: 'auth.login', ip: '127.0.0.1'})
    await store.close()
    store = undefined

    servers.push(await startServer('A', args.bin, dir))
    if (args.ab) servers.push(await startServer('B', args.ab, dir))
    const A = servers[0]
    const login = async (email: string) => {
      const r = await https(agent, `${A.url}/portal/auth/login`, {body: {email, password: PASSWORD}, method: 'POST'})
      if (r.status !== 200) throw new Error(`login ${email}: ${r.status} ${r.text}`)
      return JSON.parse(r.text).access_token as string
    }
    const userToken = await login('user@bench.example')
    const adminToken = await login('admin@bench.example')
    console.log(`server ${A.label}: ${args.bin} (pid ${A.pid}, ${A.url})${args.ab ? `\nserver B: ${args.ab} (pid ${servers[1].pid}, ${servers[1].url})` : ''}`)

    // (1) latency per kind of page, one request at a time
    const cursorAt = (seq: number) => Buffer.from(`${new Date(Date.parse('2026-01-01T00:00:00Z') + seq * 1000).toISOString()}|${seq}`).toString('base64url')
    const deep = () => cursorAt(Math.floor(Math.random() * ROWS))
    const kinds: [string, string, () => string][] = [
      ['user: first page (50)', userToken, () => '/portal/messages?limit=50'],
      ['user: random deep page', userToken, () => `/portal/messages?limit=50&cursor=${deep()}`],
      ['user: status=failed, deep', userToken, () => `/portal/messages?limit=50&status=failed&cursor=${deep()}`],
      ['user: date range (1 day)', userToken, () => '/portal/messages?limit=50&from=2026-01-05T00:00:00Z&to=2026-01-06T00:00:00Z'],
      ['admin: all clients, deep page', adminToken, () => `/portal/messages?limit=50&cursor=${deep()}`],
      ['admin: status=delivered, deep', adminToken, () => `/portal/messages?limit=50&status=delivered&cursor=${deep()}`],
      ['admin: one client, 200 per page', adminToken, () => `/portal/messages?limit=200&client=client3&cursor=${deep()}`],
    ]
    console.log(`\nGET /portal/messages over HTTPS to server ${A.label}, one request at a time, 200 requests each:`)
    for (const [name, token, url] of kinds) {
      const lat: number[] = []
      for (let i = 0; i < 210; i++) {
        const t0 = performance.now()
        const r = await https(agent, `${A.url}${url()}`, {token})
        if (r.status !== 200) throw new Error(`${name}: ${r.status} ${r.text}`)
        if (i >= 10) lat.push(performance.now() - t0)
        if (JSON.parse(r.text).messages.length === 0 && !name.includes('range')) throw new Error(`${name}: empty page`)
      }
      console.log(`  ${name.padEnd(34)} p50 ${ms(pct(lat, 50))}  p99 ${ms(pct(lat, 99))}  max ${ms(Math.max(...lat))}`)
    }

    // (2) throughput: wrk in its own process, the server in its own
    const routes: Route[] = [
      {name: 'GET /portal/profile', path: '/portal/profile', token: userToken},
      {name: 'GET /portal/messages (user, 1st page)', path: '/portal/messages?limit=50', token: userToken},
      {name: 'GET /portal/messages (admin, 1st page)', path: '/portal/messages?limit=50', token: adminToken},
      {name: 'GET /portal/messages/:id', path: '/portal/messages/m7', token: userToken},
      {name: 'GET /admin/stats', path: '/admin/stats', token: adminToken},
      {name: 'GET /admin/users', path: '/admin/users', token: adminToken},
      {name: 'GET /admin/certificates', path: '/admin/certificates', token: adminToken},
      {name: 'GET /admin/audit', path: '/admin/audit?limit=100', token: adminToken},
      {body: JSON.stringify({email: 'user@bench.example', password: PASSWORD}), connections: 4, method: 'POST', seconds: Math.max(SECONDS, 20), name: 'POST /portal/auth/login (scrypt, -c4)', path: '/portal/auth/login', token: ''},
    ].filter((r) => !args.only || args.only.split(',').some((w) => r.name.includes(w)))
    const results = new Map<string, Run[][]>()
    for (const route of routes) {
      const perServer: Run[][] = servers.map(() => [])
      for (let round = 0; round < ROUNDS; round++) {
        for (const [i, s] of servers.entries()) {
          // a short warm-up (JIT, pools, TLS sessions), then the measured run
          if (!route.seconds) await wrk(s, route, lua, 1, CONNECTIONS)
          perServer[i].push(await wrk(s, route, lua, route.seconds ?? SECONDS, CONNECTIONS))
        }
      }
      results.set(route.name, perServer)
      const a = perServer[0]
      process.stderr.write(`  ${route.name}: ${a.map((r) => Math.round(r.rps)).join(' ')} req/s${servers.length > 1 ? ` | B ${perServer[1].map((r) => Math.round(r.rps)).join(' ')}` : ''}\n`)
    }

    console.log(`\nthroughput over HTTPS: wrk -t1 -c${CONNECTIONS} -d${SECONDS}s (login: -c4 -d${Math.max(SECONDS, 20)}s) in its own process, server \`mq portal start\` (own process)${ROUNDS > 1 ? `, median of ${ROUNDS} runs` : ''}`)
    const head = ['route', 'req/s', 'p50', 'p99', 'errors', 'server CPU/req']
    if (servers.length > 1) head.push('B req/s', 'B CPU/req', 'CPU B/A')
    const rows: string[][] = [head]
    for (const [name, perServer] of results) {
      const [a, b] = perServer
      const row = [name, rate(median(a.map((r) => r.rps))), ms(median(a.map((r) => r.p50))), ms(median(a.map((r) => r.p99))), String(a.reduce((n, r) => n + r.errors, 0)), ms(median(a.map((r) => r.cpuMsPerReq)))]
      if (b) {
        const ca_ = median(a.map((r) => r.cpuMsPerReq))
        const cb = median(b.map((r) => r.cpuMsPerReq))
        row.push(rate(median(b.map((r) => r.rps))) + (b.some((r) => r.errors) ? ' (errors!)' : ''), ms(cb), (cb / ca_).toFixed(2))
      }
      rows.push(row)
    }
    const widths = head.map((_, i) => Math.max(...rows.map((r) => r[i].length)))
    for (const r of rows) console.log('  ' + r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '))
    console.log('  (errors: answers other than 200 plus socket errors, over all runs; server CPU/req: user+system CPU time of the server process per request)')
  } finally {
    agent.destroy()
    for (const s of servers) await s.stop()
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
