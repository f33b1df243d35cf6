// The broker's HTTPS API under load: requests/s and latency per route over mutual TLS with
// keep-alive, against `mq broker start` run as a user runs it (its own process). Usage (after
// npm run build):
//   node dist/scripts/api-bench.js [--seconds 3] [--connections 16] [--rounds 3] [--base ROOT]
// --base ROOT: another built checkout (a directory with bin/run.js, dist/, package.json,
// oclif.manifest.json and node_modules, e.g. `git worktree add /tmp/mq-base main`, node_modules
// linked from this checkout, `npm run build` there) measured
// in turn with this one, round by round (A B A B ...), so machine noise hits both alike; prints
// the medians and this/base ratios. Besides requests/s and latency (which depend on whatever else
// the machine runs) it reports the broker's own CPU time per request, the steadier figure on a
// shared machine. Every request must answer 2xx: any error fails the run.
import {type ChildProcess, spawn} from 'node:child_process'
import {mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {Agent, request} from 'node:https'
import {createServer} from 'node:net'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {MqHome} from '../src/lib/config/home.js'
import {configSchema} from '../src/lib/config/schema.js'
import {CertificateAuthority} from '../src/lib/pki/index.js'

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : dflt
}
const SECONDS = Number(arg('seconds', '3'))
const CONNECTIONS = Number(arg('connections', '16'))
const ROUNDS = Number(arg('rounds', process.argv.includes('--base') ? '3' : '1'))
const HERE = resolve(fileURLToPath(new URL('../..', import.meta.url)))
const BASE = process.argv.includes('--base') ? resolve(arg('base', '')) : undefined
// --only REGEX: just the routes whose name matches (e.g. --only register)
const ONLY = new RegExp(arg('only', '.'))

const freePort = () =>
  new Promise<number>((res, rej) => {
    const s = createServer()
    s.once('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as {port: number}).port
      s.close(() => res(p))
    })
  })

/** CPU time the broker process has used so far, in microseconds (utime + stime of /proc/PID/stat, 100 ticks/s) */
function cpuMicros(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) * 10_000
}

async function startBroker(root: string, home: string): Promise<{api: number; cpu: () => number; stop: () => Promise<void>}> {
  const [port, api] = [await freePort(), await freePort()]
  const env = {...process.env, NO_COLOR: '1'}
  // MQ_BENCH_NODE_ARGS: node flags for the broker, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to see where its time goes
  const nodeArgs = (process.env.MQ_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)
  const proc: ChildProcess = spawn(process.execPath, [...nodeArgs, join(root, 'bin/run.js'), 'broker', 'start', '--home', home, '--port', String(port), '--api-port', String(api)], {cwd: root, env, stdio: ['ignore', 'ignore', 'pipe']})
  let log = ''
  await new Promise<void>((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`broker did not start:\n${log}`)), 60_000)
    proc.stderr!.on('data', (d: Buffer) => {
      log += d.toString()
      if (log.includes('broker ready')) {
        clearTimeout(t)
        ok()
      }
    })
    proc.once('exit', (c) => fail(new Error(`broker exited with ${c}:\n${log}`)))
  })
  return {
    api,
    cpu: () => cpuMicros(proc.pid!),
    stop: () =>
      new Promise<void>((ok) => {
        if (proc.exitCode !== null) return ok()
        proc.once('exit', () => ok())
        proc.kill('SIGTERM')
      }),
  }
}

interface Target {
  name: string
  identity: string
  method: string
  path: (i: number) => string
  body?: (i: number) => string
}

interface Result {
  rps: number
  /** the broker's CPU time per request, µs: what the server spends, whatever else runs on the machine */
  cpuUs: number
  p50: number
  p99: number
  errors: number
}

function agentFor(home: MqHome, identity: string): Agent {
  return new Agent({ca: readFileSync(home.caCert), cert: readFileSync(home.issuedCert(identity)), checkServerIdentity: () => undefined, keepAlive: true, key: readFileSync(home.issuedKey(identity)), maxSockets: CONNECTIONS} as never)
}

async function measure(port: number, cpu: () => number, agent: Agent, t: Target): Promise<Result> {
  let seq = 0
  let errors = 0
  let firstError = ''
  const once = () =>
    new Promise<number>((ok) => {
      const i = seq++
      const body = t.body?.(i)
      const started = performance.now()
      const req = request({agent, headers: body ? {'content-length': String(Buffer.byteLength(body)), 'content-type': 'application/json'} : {}, host: '127.0.0.1', method: t.method, path: t.path(i), port}, (res) => {
        let text = ''
        res.on('data', (c: Buffer) => (text += c))
        res.on('end', () => {
          if ((res.statusCode ?? 0) >= 300) {
            errors++
            firstError ||= `${res.statusCode} ${text}`
          }
          ok(performance.now() - started)
        })
      })
      req.on('error', (e) => {
        errors++
        firstError ||= e.message
        ok(performance.now() - started)
      })
      req.end(body)
    })
  const run = async (ms: number, into?: number[]) => {
    const end = Date.now() + ms
    await Promise.all(
      Array.from({length: CONNECTIONS}, async () => {
        while (Date.now() < end) {
          const l = await once()
          into?.push(l)
        }
      }),
    )
  }
  await run(500) // warm-up: connections, JIT
  const lat: number[] = []
  const started = performance.now()
  const cpu0 = cpu()
  await run(SECONDS * 1000, lat)
  const cpuUs = (cpu() - cpu0) / lat.length
  const secs = (performance.now() - started) / 1000
  lat.sort((a, b) => a - b)
  if (errors) console.error(`  ${t.name}: ${errors} errors, first: ${firstError}`)
  return {cpuUs, errors, p50: lat[Math.floor(lat.length * 0.5)], p99: lat[Math.min(lat.length - 1, Math.floor(lat.length * 0.99))], rps: lat.length / secs}
}

function measureOnce(port: number, agent: Agent, method: string, path: string, body: string): Promise<number> {
  return new Promise((ok, fail) => {
    const req = request({agent, headers: {'content-length': String(Buffer.byteLength(body)), 'content-type': 'application/json'}, host: '127.0.0.1', method, path, port}, (res) => {
      res.resume()
      res.on('end', () => ok(res.statusCode ?? 0))
    })
    req.on('error', fail)
    req.end(body)
  })
}

const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'mq-api-bench-'))
  const home = new MqHome(dir)
  const config = configSchema.parse({})
  const variants: [string, string][] = [['this', HERE], ...(BASE ? [['base', BASE] as [string, string]] : [])]
  const results: Record<string, Record<string, Result[]>> = {}
  try {
    await CertificateAuthority.open(home, config.pki).ensureDevelopment({clients: ['admin', 'proxy'], servers: [config.broker.identity]})
    const agents = {admin: agentFor(home, 'admin'), proxy: agentFor(home, 'proxy')}
    let runId = 0
    for (let round = 1; round <= ROUNDS; round++) {
      // alternate which goes first, so neither always runs on a warmer machine
      const order = round % 2 ? variants : [...variants].reverse()
      for (const [name, root] of order) {
        const id = `r${runId++}`
        const broker = await startBroker(root, dir)
        try {
          const targets: Target[] = [
            {identity: 'admin', method: 'GET', name: 'GET /health', path: () => '/health'},
            {identity: 'admin', method: 'GET', name: 'GET /api/queues', path: () => '/api/queues'},
            {body: (i) => JSON.stringify({client_id: 'alice', message_body: 'bench message', message_id: `${id}-${i}`, sender_number: '+4915200000000'}), identity: 'proxy', method: 'POST', name: 'POST /internal/messages/register', path: () => '/internal/messages/register'},
            {identity: 'admin', method: 'GET', name: 'GET /admin/messages/:id', path: (i) => `/admin/messages/${id}-seed-${i % 100}`},
          ]
          // the messages GET /admin/messages/:id reads, whichever routes run
          const seed = JSON.stringify({messages: Array.from({length: 100}, (_, i) => ({client_id: 'alice', message_body: 'bench message', message_id: `${id}-seed-${i}`, sender_number: '+4915200000000'}))})
          const seeded = await measureOnce(broker.api, agents.proxy, 'POST', '/internal/messages/register', seed)
          if (seeded !== 200) throw new Error(`seeding the records failed: HTTP ${seeded}`)
          for (const t of targets.filter((x) => ONLY.test(x.name))) {
            const r = await measure(broker.api, broker.cpu, agents[t.identity as 'admin' | 'proxy'], t)
            ;((results[t.name] ??= {})[name] ??= []).push(r)
            console.error(`  round ${round} ${name.padEnd(4)} ${t.name.padEnd(34)} ${Math.round(r.rps)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  cpu ${Math.round(r.cpuUs)} µs/req  errors ${r.errors}`)
          }
        } finally {
          for (const a of Object.values(agents)) a.destroy()
          Object.assign(agents, {admin: agentFor(home, 'admin'), proxy: agentFor(home, 'proxy')})
          await broker.stop()
        }
      }
    }
    for (const a of Object.values(agents)) a.destroy()
    console.log(`\nbroker HTTPS API, mutual TLS, keep-alive, ${CONNECTIONS} connections, ${SECONDS} s per route, median of ${ROUNDS} round(s):`)
    let failed = false
    for (const [route, byVariant] of Object.entries(results)) {
      const m = (v: string) => {
        const rs = byVariant[v]
        failed ||= rs.some((r) => r.errors > 0)
        return {cpuUs: median(rs.map((r) => r.cpuUs)), errors: rs.reduce((s, r) => s + r.errors, 0), p99: median(rs.map((r) => r.p99)), rps: median(rs.map((r) => r.rps))}
      }
      const a = m('this')
      let line = `  ${route.padEnd(34)} ${String(Math.round(a.rps)).padStart(6)} req/s  p99 ${a.p99.toFixed(2).padStart(6)} ms  cpu ${String(Math.round(a.cpuUs)).padStart(4)} µs/req  errors ${a.errors}`
      if (BASE) {
        const b = m('base')
        line += `  | base ${String(Math.round(b.rps)).padStart(6)} req/s  p99 ${b.p99.toFixed(2).padStart(6)} ms  cpu ${String(Math.round(b.cpuUs)).padStart(4)} µs/req  errors ${b.errors}  | req/s x${(a.rps / b.rps).toFixed(2)}  p99 x${(a.p99 / b.p99).toFixed(2)}  cpu/req x${(a.cpuUs / b.cpuUs).toFixed(2)}`
      }
      console.log(line)
    }
    if (failed) process.exitCode = 1
  } finally {
    rmSync(dir, {force: true, recursive: true})
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
