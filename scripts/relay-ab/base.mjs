// CPU per loopback round trip / per MiB of the bench's baseline (same code as tcpBaseline)
const root = process.argv[2]
const {SocketReader, writeFlow} = await import(`${root}/dist/src/lib/relay/reader.js`)
const {createServer, connect} = await import('node:net')
const {randomBytes} = await import('node:crypto')
const frameBytes = 23 + 21 + 8 + 12 + 100 + 16, N = 5000, MiB = 1 << 20, bulk = Number(process.argv[3] ?? 256) * MiB
const srv = createServer((s) => { let pending = 0, b = false; s.on('data', (c) => { if (b || c[0] === 0xbb) { b = true; return } pending += c.length; while (pending >= frameBytes) { pending -= frameBytes; s.write(Buffer.alloc(7)) } }); s.on('end', () => s.end('k')); s.on('error', () => {}) })
await new Promise((r) => srv.listen(0, '127.0.0.1', r))
const port = srv.address().port
const open = () => new Promise((res) => { const s = connect({host: '127.0.0.1', port}, () => res(s)); s.setNoDelay(true) })
import {readdirSync, readFileSync} from 'node:fs'
const threads = () => { const o = {}; for (const t of readdirSync('/proc/self/task')) { try { const f = readFileSync(`/proc/self/task/${t}/stat`, 'utf8'); const x = f.slice(f.lastIndexOf(')') + 2).split(' '); o[t] = (Number(x[11]) + Number(x[12])) * 10000 } catch {} } return o }
const cpu = () => { const c = process.cpuUsage(); return c.user + c.system }
const a = await open(); const ra = new SocketReader(a, 10000); const frame = Buffer.alloc(frameBytes, 1)
for (let i = 0; i < 500; i++) { await writeFlow(a, frame); await ra.read(7) }
const th0 = threads(); let c = cpu(), t = performance.now()
for (let i = 0; i < N; i++) { await writeFlow(a, frame); await ra.read(7) }
const th1 = threads(); const per = {}; for (const k in th1) per[k] = Math.round((th1[k] - (th0[k] ?? 0)) / N)
const rt = {per, cpu_us_per_rt: Math.round((cpu() - c) / N), wall_us_per_rt: Math.round((performance.now() - t) * 1000 / N)}
a.destroy()
const b = await open(); const rb = new SocketReader(b, 10000)
const block = randomBytes(MiB)
c = cpu(); t = performance.now()
await writeFlow(b, Buffer.from([0xbb]))
for (let off = 0, i = 0; off < bulk; off += MiB, i++) { block.writeUInt32LE(i, 0); await writeFlow(b, Buffer.from(block)) }
b.end(); await rb.read(1)
console.log(JSON.stringify({...rt, cpu_us_per_mib: Math.round((cpu() - c) / (bulk / MiB)), wall_mib_s: Math.round(bulk / MiB / ((performance.now() - t) / 1000))}))
b.destroy(); srv.close()
