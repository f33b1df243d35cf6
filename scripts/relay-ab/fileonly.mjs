// usage: node fileonly.mjs ROOT MiB -> upload CPU µs/MiB and wall MiB/s through an in-process relay (the bench's file step), then the baseline stream
const [root, mibArg] = process.argv.slice(2)
import {tmpdir} from 'node:os'
import {join} from 'node:path'
const MiB = 1 << 20, total = Number(mibArg) * MiB
const {readFileSync, mkdtempSync, rmSync, readdirSync} = await import('node:fs')
const {randomBytes} = await import('node:crypto')
const {RelayServer} = await import(`${root}/dist/src/lib/relay/server.js`)
const {RelayStore} = await import(`${root}/dist/src/lib/relay/store.js`)
const {RelayConnection} = await import(`${root}/dist/src/lib/relay/client.js`)
const {Op, MessageType, encodeRegisterPayload} = await import(`${root}/dist/src/lib/relay/protocol.js`)
const threads = () => { const o = {}; for (const t of readdirSync('/proc/self/task')) { try { const f = readFileSync(`/proc/self/task/${t}/stat`, 'utf8'); const x = f.slice(f.lastIndexOf(')') + 2).split(' '); o[t] = (Number(x[11]) + Number(x[12])) * 10000 } catch {} } return o }
const dir = mkdtempSync(join(tmpdir(), 'relay-ab-'))
const store = await RelayStore.open({dataDir: dir + '/data', url: 'sqlite'})
const server = new RelayServer({filesDir: dir + '/data/files', host: '127.0.0.1', idleTimeoutMs: 60000, maxFileBytes: total + MiB, maxTextBytes: 16 << 20, port: 0, store})
await server.start()
const address = {host: '127.0.0.1', port: server.port}
const key = (await import('node:crypto')).generateKeyPairSync('rsa', {modulusLength: 2048}).publicKey.export({format: 'der', type: 'spki'})
const a = await RelayConnection.connect(address, 3)
const idA = await a.call(Buffer.alloc(16), Op.register, encodeRegisterPayload(3, 'a', key), 'register')
async function* generated(total) { const block = randomBytes(MiB); for (let off = 0, i = 0; off < total; off += MiB, i++) { block.writeUInt32LE(i, 0); yield Buffer.from(block.subarray(0, Math.min(MiB, total - off))) } }
const fsp = await import('node:fs/promises')
const tm = {sync: 0, datasync: 0, writev: 0, nwritev: 0}
if (process.env.TIMING) {
  const fh0 = await fsp.open(new URL(import.meta.url)); const FH = Object.getPrototypeOf(fh0); await fh0.close()
  for (const m of ['sync', 'datasync', 'writev']) { const o = FH[m]; FH[m] = async function (...a) { const t = performance.now(); try { return await o.apply(this, a) } finally { tm[m] += performance.now() - t; if (m === 'writev') tm.nwritev++ } } }
  const rf = RelayServer.prototype.receiveFile; RelayServer.prototype.receiveFile = async function (...a) { const t = performance.now(); try { return await rf.apply(this, a) } finally { tm.receive = performance.now() - t } }
}
const cpu = () => { const c = process.cpuUsage(); return c.user + c.system }
const th0 = threads(), c0 = cpu(), t0 = performance.now()
await a.send(idA, Op.send, idA, MessageType.file, total, generated(total))
const us = cpu() - c0, wall = performance.now() - t0, th1 = threads()
const per = {}; for (const k in th1) { const d = Math.round((th1[k] - (th0[k] ?? 0)) / (total / MiB)); if (d) per[k] = d }
if (process.env.TIMING) { tm.total = wall; for (const k in tm) tm[k] = Math.round(tm[k]); console.log(JSON.stringify(tm)) }
console.log(JSON.stringify({root: root.split('/').pop(), cpu_us_per_mib: Math.round(us / (total / MiB)), mib_s: Math.round(total / MiB / (wall / 1000)), per, rss: Math.round(process.resourceUsage().maxRSS / 1024)}))
a.close(); await server.stop(); await store.close(); rmSync(dir, {recursive: true, force: true})
