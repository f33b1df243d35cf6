// usage: SIZE=1024 N=100000 [WINDOW=2000] node store-cpu.mjs ROOT LABEL
// The broker's DurableStore from ROOT's build alone (no TLS, no clients, no engine), unpaced: up to
// WINDOW unconfirmed publishes of SIZE bytes (bodies of 64 KiB or more in shared memory, as the frame
// parser hands them over), each acked (deleted, with its size) right after its confirm. After a warm-up
// of WARMUP (N/2) messages: CPU per message (us) of this script's main thread and of the busiest other
// threads (the writer first; writerUser: its user time alone), msg/s and commits. Linux only (/proc).
import {mkdtempSync, readFileSync, readdirSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

const [root, label] = process.argv.slice(2)
const {DurableStore} = await import(`${root}/dist/src/lib/broker/store.js`)
const dir = mkdtempSync(join(process.env.TMPDIR ?? tmpdir(), 'mq-store-cpu-'))
const store = new DurableStore(join(dir, 'data'), 0, {keyFile: join(dir, 'broker.key')})
const SIZE = Number(process.env.SIZE ?? 1024)
const N = Number(process.env.N ?? 100000)
const W = Number(process.env.WINDOW ?? 2000)
const shared = SIZE >= 64 * 1024
const bodies = Array.from({length: 4}, (_, i) => {
  const b = shared ? Buffer.from(new SharedArrayBuffer(SIZE)) : Buffer.alloc(SIZE)
  for (let j = 0; j < SIZE; j++) b[j] = (j * 31 + i) & 0xff
  return b
})
const threads = () =>
  Object.fromEntries(
    readdirSync('/proc/self/task').map((t) => {
      const f = readFileSync(`/proc/self/task/${t}/stat`, 'utf8').split(') ')[1].split(' ')
      return [t, [(Number(f[11]) + Number(f[12])) * 10, Number(f[11]) * 10]]
    }),
  )
let seq = 0
async function run(n) {
  let sent = 0
  let confirmed = 0
  await new Promise((done) => {
    const pump = () => {
      while (sent < n && sent - confirmed < W) {
        sent++
        const body = shared ? bodies[seq & 3] : Buffer.from(bodies[seq & 3])
        const m = {body, deliveryCount: 0, exchange: '', expiresAt: 0, headers: {}, messageId: 'm-' + (++seq).toString(36).padStart(30, '0'), redelivered: false, routingKey: 'q1', seq, timestamp: Date.now()}
        store.insertMessage('q1', m)
        store.afterCommit((err) => {
          if (err) throw err
          store.deleteMessage(m.seq, SIZE)
          if (++confirmed === n) done()
          else if (sent < n && sent - confirmed < W / 2) setImmediate(pump)
        })
      }
    }
    pump()
  })
}
try {
  await run(Number(process.env.WARMUP ?? Math.max(1000, Math.floor(N / 2))))
  const c0 = threads()
  const k0 = store.commits
  const t0 = performance.now()
  await run(N)
  const ms = performance.now() - t0
  const c1 = threads()
  const main = String(process.pid)
  const us = (d) => Math.round((d * 10000) / N) / 10
  const others = Object.entries(c1)
    .filter(([t]) => t !== main)
    .map(([t, v]) => [v[0] - (c0[t]?.[0] ?? 0), v[1] - (c0[t]?.[1] ?? 0)])
    .sort((a, b) => b[0] - a[0])
    .slice(0, 2)
  // writerUser: the writer's user time alone (sealing, SQLite, JS); the rest is the kernel's (the
  // page-cache copy of each segment write dominates at 1 MiB bodies and varies run to run)
  console.log(JSON.stringify({label, size: SIZE, n: N, main: us(c1[main][0] - c0[main][0]), writer: us(others[0][0]), writerUser: us(others[0][1]), next: us(others[1][0]), msgs: Math.round((N * 1000) / ms), commits: store.commits - k0}))
} finally {
  await store.close()
  rmSync(dir, {force: true, recursive: true})
}
