// The broker's HTTPS API under load: requests/s and latency per route over mutual TLS with
// keep-alive, against `mq broker start` run as a user runs it (its own process). Usage (after
// npm run build):
//   node dist/scripts/api-bench.js [--seconds 3] [--connections 16] [--rounds 3] [--base ROOT]
// --base ROOT: another built checkout (a directory with bin/run.js and dist/, e.g. main) measured
// in turn with this one, round by round (A B A B ...), so machine noise hits both alike; prints
// the medians and this/base ratios. Every request must answer 2xx: any error fails the run.
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

const freePort = () =>
  new Promise<number>((res, rej) => {
    const s = createServer()
    s.once('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as {port: number}).port
      s.close(() => res(p))
    })
  })

async function startBroker(root: string, home: string): Promise<{api: number; stop: () => Promise<void>}> {
  const [port, api] = [await freePort(), await freePort()]
  const env = {...process.env, NO_COLOR: '1'}
  const proc: ChildProcess = spawn(process.execPath, [join(root, 'bin/run.js'), 'broker', 'start', '--home', home, '--port', String(port), '--api-port', String(api)], {cwd: root, env, stdio: ['ignore', 'ignore', 'pipe']})
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
  p50: number
  p99: number
  errors: number
}

function agentFor(home: MqHome, identity: string): Agent {
  return new Agent({ca: readFileSync(home.caCert), cert: readFileSync(home.issuedCert(identity)), checkServerIdentity: () => undefined, keepAlive: true, key: readFileSync(home.issuedKey(identity)), maxSockets: CONNECTIONS} as never)
}

async function measure(port: number, agent: Agent, t: Target, tag: string): Promise<Result> {
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
  void tag
  await run(500) // warm-up: connections, JIT
  const lat: number[] = []
  const started = performance.now()
  await run(SECONDS * 1000, lat)
  const secs = (performance.now() - started) / 1000
  lat.sort((a, b) => a - b)
  if (errors) console.error(`  ${t.name}: ${errors} errors, first: ${firstError}`)
  return {errors, p50: lat[Math.floor(lat.length * 0.5)], p99: lat[Math.min(lat.length - 1, Math.floor(lat.length * 0.99))], rps: lat.length / secs}
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
            {identity: 'admin', method: 'GET', name: 'GET /admin/messages/:id', path: (i) => `/admin/messages/${id}-${i % 100}`},
          ]
          for (const t of targets) {
            const r = await measure(broker.api, agents[t.identity as 'admin' | 'proxy'], t, id)
            ;((results[t.name] ??= {})[name] ??= []).push(r)
            console.error(`  round ${round} ${name.padEnd(4)} ${t.name.padEnd(34)} ${Math.round(r.rps)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  errors ${r.errors}`)
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
        return {errors: rs.reduce((s, r) => s + r.errors, 0), p99: median(rs.map((r) => r.p99)), rps: median(rs.map((r) => r.rps))}
      }
      const a = m('this')
      let line = `  ${route.padEnd(34)} ${String(Math.round(a.rps)).padStart(6)} req/s  p99 ${a.p99.toFixed(2).padStart(6)} ms  errors ${a.errors}`
      if (BASE) {
        const b = m('base')
        line += `  | base ${String(Math.round(b.rps)).padStart(6)} req/s  p99 ${b.p99.toFixed(2).padStart(6)} ms  errors ${b.errors}  | req/s x${(a.rps / b.rps).toFixed(2)}  p99 x${(a.p99 / b.p99).toFixed(2)}`
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
