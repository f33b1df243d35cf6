// usage: [SIZE=256] [ACK_EARLY=1] node store-lat.mjs ROOT RATE SECONDS LABEL
// The broker's DurableStore from ROOT's build alone (no TLS, no clients, no engine): paced publishes of
// SIZE bytes, one waiter each (as a confirm), each acked (deleted) right after its confirm, or with
// ACK_EARLY=1 about 1 ms after its publish (a consumer that keeps up: the ack reaches the store before
// the commit of its insert). After a 10,000-message warm-up: confirm latency percentiles, commits, bytes
// handed to write() per message (writer and checkpointer, /proc/self/io wchar) and CPU per message of the
// three busiest threads (this script's main thread first, then the writer). Linux only (/proc).
import {mkdtempSync, readFileSync, readdirSync, rmSync} from 'node:fs'
import {loadavg, tmpdir} from 'node:os'
import {join} from 'node:path'

const [root, rate, seconds, label] = process.argv.slice(2)
const {DurableStore} = await import(`${root}/dist/src/lib/broker/store.js`)
const dir = mkdtempSync(join(tmpdir(), 'mq-store-lat-'))
const store = new DurableStore(join(dir, 'data'), 0, {keyFile: join(dir, 'broker.key')})
const body = Buffer.alloc(Number(process.env.SIZE ?? 256), 7)
const early = process.env.ACK_EARLY === '1'
// per thread: user + system CPU in ms (CLK_TCK 100)
const threads = () =>
  Object.fromEntries(
    readdirSync('/proc/self/task').map((t) => {
      const f = readFileSync(`/proc/self/task/${t}/stat`, 'utf8').split(') ')[1].split(' ')
      return [t, (Number(f[11]) + Number(f[12])) * 10]
    }),
  )
const wchar = () => Number(/wchar: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))[1])
const R = Number(rate)
const N = R * Number(seconds)
const lat = []
let seq = 0
const acks = []
const ackLater = (s, schedule) => {
  acks.push(s)
  if (acks.length === 1)
    schedule(() => {
      for (const a of acks) store.deleteMessage(a)
      acks.length = 0
    })
}

async function run(n, record) {
  const t0 = performance.now()
  let sent = 0
  let confirmed = 0
  await new Promise((done) => {
    const tick = () => {
      const due = Math.min(n, Math.floor(((performance.now() - t0) * R) / 1000))
      for (; sent < due; sent++) {
        const m = {body, deliveryCount: 0, exchange: '', expiresAt: 0, headers: {}, messageId: 'm-' + (++seq).toString(36).padStart(30, '0'), redelivered: false, routingKey: 'q1', seq, timestamp: Date.now()}
        store.insertMessage('q1', m)
        const t = performance.now()
        if (early) ackLater(m.seq, (f) => setTimeout(f, 0))
        store.afterCommit(() => {
          if (record) lat.push(performance.now() - t)
          if (!early) ackLater(m.seq, setImmediate)
          if (++confirmed === n) done()
        })
      }
      if (sent < n) setTimeout(tick, 0)
    }
    tick()
  })
}

try {
  await run(Math.min(N, 10000), false)
  const c0 = threads()
  const l0 = loadavg()[0]
  const k0 = store.commits
  const w0 = wchar()
  await run(N, true)
  const c1 = threads()
  const cpu = Object.entries(c1)
    .map(([t, v]) => v - (c0[t] ?? 0))
    .sort((a, b) => b - a)
    .slice(0, 3)
    .map((d) => Math.round((d * 10000) / N) / 10)
  lat.sort((a, b) => a - b)
  const p = (q) => Math.round(lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] * 100) / 100
  console.log(JSON.stringify({commits: store.commits - k0, confirmMs: {max: p(1), p50: p(0.5), p90: p(0.9), p99: p(0.99), p999: p(0.999)}, cpuUsMsgTop3: cpu, label, load: Math.round(l0 * 10) / 10, rate: R, size: body.length, writtenPerMsg: Math.round((wchar() - w0) / N)}))
} finally {
  await store.close()
  rmSync(dir, {force: true, recursive: true})
}
