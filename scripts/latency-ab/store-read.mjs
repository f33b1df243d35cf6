// usage: SIZE=1048576 N=600 node store-read.mjs ROOT LABEL
// Fills a DurableStore from ROOT's build with N messages of SIZE bytes (bodies of 64 KiB or more from
// shared memory, as the broker hands them over), closes it, then reopens it 4 times and pages the queue
// through readQueue (recovery's and paging's decrypting path): main-thread CPU per message (us) of
// reopens 2-4 (10 ms ticks: keep N * per-message cost well above that). Linux only (/proc).
import {mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
const [root, label] = process.argv.slice(2)
const {DurableStore} = await import(`${root}/dist/src/lib/broker/store.js`)
const dir = mkdtempSync(join(process.env.TMPDIR ?? tmpdir(), 'mq-store-read-'))
const SIZE = Number(process.env.SIZE), N = Number(process.env.N)
const opts = {keyFile: join(dir, 'broker.key')}
const cpu = () => { const f = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) * 10000 }
let st = new DurableStore(join(dir, 'data'), 0, opts)
const shared = SIZE >= 65536
for (let seq = 1; seq <= N; seq++) {
  const body = shared ? Buffer.from(new SharedArrayBuffer(SIZE)) : Buffer.alloc(SIZE, seq)
  st.insertMessage('q1', {body, deliveryCount: 0, exchange: '', expiresAt: 0, headers: {}, idHash1: 0, idHash2: 0, messageId: 'm-' + seq, redelivered: false, routingKey: 'q1', seq, timestamp: Date.now()})
  if (seq % 64 === 0) await st.flush()
}
await st.flush(); await st.close()
const res = []
for (let r = 0; r < 4; r++) {
  st = new DurableStore(join(dir, 'data'), 0, opts)
  const c0 = cpu()
  let after = 0, got = 0
  while (got < N) { const p = st.readQueue('q1', after, Number.MAX_SAFE_INTEGER, 256, 64 << 20); got += p.messages.length; after = p.lastSeq; if (!p.messages.length) break }
  const us = (cpu() - c0) / N
  await st.close()
  if (r > 0) res.push(Math.round(us * 10) / 10)
}
console.log(JSON.stringify({label, size: SIZE, n: N, readUs: res}))
rmSync(dir, {recursive: true, force: true})
