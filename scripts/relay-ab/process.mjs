// usage: node process.mjs ROOT N [twin]  -> CPU per text of a relay (or the bench's twin) running in a process of
// its own, all threads and main thread, from /proc; the client (this process, this checkout's dist) sends N texts
// one at a time after 2000 warm-up (client_us: this client's own CPU per text, all its threads). Also the server's event-loop delay (checkpoint stalls) and its GC count.
import {spawn} from 'node:child_process'
import {generateKeyPairSync, randomBytes} from 'node:crypto'
import {mkdtempSync, readFileSync, readdirSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {PerformanceObserver, monitorEventLoopDelay} from 'node:perf_hooks'

const [root, nArg, mode] = process.argv.slice(2)
if (mode === 'serve' || mode === 'serve-twin') {
  const loop = monitorEventLoopDelay({resolution: 1})
  loop.enable()
  let gcs = 0
  new PerformanceObserver((l) => (gcs += l.getEntries().length)).observe({entryTypes: ['gc']})
  let stop
  if (mode === 'serve-twin') {
    const {startBaselineTwin} = await import(`${root}/dist/src/lib/relay/bench.js`)
    const twin = await startBaselineTwin()
    stop = twin.close
    process.stdout.write(`PORT ${twin.port}\n`)
  } else {
    const {RelayServer} = await import(`${root}/dist/src/lib/relay/server.js`)
    const {RelayStore} = await import(`${root}/dist/src/lib/relay/store.js`)
    const dir = mkdtempSync(join(tmpdir(), 'relay-ab-proc-'))
    const store = await RelayStore.open({dataDir: dir + '/data', url: 'sqlite'})
    const server = new RelayServer({filesDir: dir + '/data/files', host: '127.0.0.1', idleTimeoutMs: 60000, maxFileBytes: 1 << 30, maxTextBytes: 16 << 20, port: 0, store})
    await server.start()
    stop = async () => { await server.stop(); await store.close(); rmSync(dir, {force: true, recursive: true}) }
    process.stdout.write(`PORT ${server.port}\n`)
  }
  process.on('SIGUSR2', () => { loop.reset(); gcs = 0 })
  process.on('SIGTERM', async () => {
    process.stdout.write(`STATS ${JSON.stringify({gcs, loop_p999_ms: +(loop.percentile(99.9) / 1e6).toFixed(1), loop_max_ms: +(loop.max / 1e6).toFixed(1)})}\n`)
    await stop()
    process.exit(0)
  })
} else {
  const N = Number(nArg)
  const twin = mode === 'twin'
  const here = new URL('../..', import.meta.url).pathname
  const {RelayConnection} = await import(`${here}dist/src/lib/relay/client.js`)
  const {encrypt, newSymKey} = await import(`${here}dist/src/lib/relay/crypto.js`)
  const {Op, MessageType, encodeRegisterPayload} = await import(`${here}dist/src/lib/relay/protocol.js`)
  // SERVER_NODE_ARGS: node flags for the server process, e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof'
  const serverArgs = (process.env.SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean)
  const child = spawn(process.execPath, [...serverArgs, new URL(import.meta.url).pathname, root, '0', twin ? 'serve-twin' : 'serve'], {stdio: ['ignore', 'pipe', 'inherit']})
  let out = ''
  const port = await new Promise((resolve) => child.stdout.on('data', (d) => { out += d; const m = /PORT (\d+)/.exec(out); if (m) resolve(Number(m[1])) }))
  const address = {host: '127.0.0.1', port}
  const key = generateKeyPairSync('rsa', {modulusLength: 2048}).publicKey.export({format: 'der', type: 'spki'})
  const a = await RelayConnection.connect(address, 3)
  // the twin registers nobody: it only answers sends
  const register = (name) => (twin ? randomBytes(16) : a.call(Buffer.alloc(16), Op.register, encodeRegisterPayload(3, name, key), 'register'))
  const idA = await register('a')
  const idB = await register('b')
  const sym = newSymKey('strong')
  const binding = {recipient: idB, sender: idA, type: MessageType.text}
  const plain = Buffer.alloc(100, 0x61)
  const threads = () => { const o = {}; for (const t of readdirSync(`/proc/${child.pid}/task`)) { try { const f = readFileSync(`/proc/${child.pid}/task/${t}/stat`, 'utf8'); const x = f.slice(f.lastIndexOf(')') + 2).split(' '); o[t] = (Number(x[11]) + Number(x[12])) * 10000 } catch {} } return o }
  let counter = 0n
  const send = async () => { const s = encrypt('strong', sym, binding, ++counter, plain); await a.send(idA, Op.send, idB, MessageType.text, s.length, s) }
  for (let i = 0; i < 2000; i++) await send()
  child.kill('SIGUSR2')
  const th0 = threads()
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  for (let i = 0; i < N; i++) await send()
  const wall = performance.now() - t0
  const c1 = process.cpuUsage(c0)
  const th1 = threads()
  let all = 0
  for (const k in th1) all += th1[k] - (th0[k] ?? 0)
  a.close()
  const stats = new Promise((resolve) => child.stdout.on('data', () => { const m = /STATS (.*)\n/.exec(out); if (m) resolve(JSON.parse(m[1])) }))
  child.kill('SIGTERM')
  console.log(JSON.stringify({root: (twin ? 'twin:' : '') + root.split('/').pop(), server_us: +(all / N).toFixed(1), main_us: +((th1[child.pid] - th0[child.pid]) / N).toFixed(1), client_us: +((c1.user + c1.system) / N).toFixed(1), texts_per_s: Math.round((N / wall) * 1000), ...(await stats)}))
}
