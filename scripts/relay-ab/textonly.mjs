// usage: node textonly.mjs ROOT N  -> CPU µs per text for N texts through an in-process relay, mirroring the bench's send loop
const [root, nArg] = process.argv.slice(2)
const N = Number(nArg)
const {readFileSync, readdirSync} = await import('node:fs')
const {startPair} = await import('./setup.mjs')
const {RelayConnection, a, address, idA, idB, sym, binding, plain, close, register, crypto: {encrypt}, protocol: {Op, MessageType}} = await startPair(root)
for (let i = 0; i < 50; i++) await a.send(idA, Op.send, idB, MessageType.keyRequest, 0, Buffer.alloc(0))
const threads = () => { const o = {}; for (const t of readdirSync('/proc/self/task')) { try { const f = readFileSync(`/proc/self/task/${t}/stat`, 'utf8'); const x = f.slice(f.lastIndexOf(')') + 2).split(' '); o[t] = (Number(x[11]) + Number(x[12])) * 10000 } catch {} } return o }
const cpu = () => { const c = process.cpuUsage(); return c.user + c.system }
let counter = 0n
for (let i = 0; i < 2000; i++) { const sealed = encrypt('strong', sym, binding, ++counter, plain); await a.send(idA, Op.send, idB, MessageType.text, sealed.length, sealed) }
const th0 = threads(); const C = Number(process.env.CONNS ?? 1)
const senders = [{conn: a, id: idA, binding}]
for (let i = 1; i < C; i++) { const conn = await RelayConnection.connect(address, 3); const id = await register(conn, 'a' + i); senders.push({conn, id, binding: {recipient: idB, sender: id, type: MessageType.text}}) }
let next = 0
const c0 = cpu(), t0 = performance.now()
await Promise.all(senders.map(async (s) => { while (next < N) { next++; const sealed = encrypt('strong', sym, s.binding, ++counter, plain); await s.conn.send(s.id, Op.send, idB, MessageType.text, sealed.length, sealed) } }))
const us = cpu() - c0, wall = performance.now() - t0, th1 = threads(), main = Object.keys(th1)[0]
if (!process.env.QUIET) console.log(JSON.stringify({root: root.split('/').pop(), conns: C, cpu_us_per_text: Math.round(us / N), main_us: Math.round((th1[main] - th0[main]) / N), wall_us_per_text: Math.round(wall * 1000 / N)}))
await close()
