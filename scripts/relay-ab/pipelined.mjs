// usage: node pipelined.mjs ROOT N K -> CPU µs per text for N texts written K at a time (pipelined, then K acks read) through an in-process relay
const [root, nArg, kArg] = process.argv.slice(2)
import {tmpdir} from 'node:os'
import {join} from 'node:path'
const N = Number(nArg), K = Number(kArg ?? 16)
const {mkdtempSync, rmSync} = await import('node:fs')
const {RelayServer} = await import(`${root}/dist/src/lib/relay/server.js`)
const {RelayStore} = await import(`${root}/dist/src/lib/relay/store.js`)
const {RelayConnection} = await import(`${root}/dist/src/lib/relay/client.js`)
const {encrypt, newSymKey} = await import(`${root}/dist/src/lib/relay/crypto.js`)
const {Op, MessageType, encodeRegisterPayload, encodeRequestHeader, encodeSendHeader} = await import(`${root}/dist/src/lib/relay/protocol.js`)
const dir = mkdtempSync(join(tmpdir(), 'relay-ab-'))
const store = await RelayStore.open({dataDir: dir + '/data', url: 'sqlite'})
const server = new RelayServer({filesDir: dir + '/data/files', host: '127.0.0.1', idleTimeoutMs: 60000, maxFileBytes: 1 << 30, maxTextBytes: 16 << 20, port: 0, store})
await server.start()
const address = {host: '127.0.0.1', port: server.port}
const key = (await import('node:crypto')).generateKeyPairSync('rsa', {modulusLength: 2048}).publicKey.export({format: 'der', type: 'spki'})
const a = await RelayConnection.connect(address, 3), b = await RelayConnection.connect(address, 3)
const idA = await a.call(Buffer.alloc(16), Op.register, encodeRegisterPayload(3, 'a', key), 'register')
const idB = await b.call(Buffer.alloc(16), Op.register, encodeRegisterPayload(3, 'b', key), 'register')
const sym = newSymKey('strong'), binding = {recipient: idB, sender: idA, type: MessageType.text}, plain = Buffer.alloc(100, 0x61)
let counter = 0n
const round = async () => {
  const frames = []
  for (let i = 0; i < K; i++) { const sealed = encrypt('strong', sym, binding, ++counter, plain); frames.push(encodeRequestHeader(3, idA, Op.send, 21 + sealed.length), encodeSendHeader(idB, MessageType.text, sealed.length), sealed) }
  a.sock.write(Buffer.concat(frames))
  for (let i = 0; i < K; i++) { const h = await a.reader.read(7); if (h.readUInt16LE(1) !== 2103) throw new Error(`ack code ${h.readUInt16LE(1)}`); await a.reader.read(h.readUInt32LE(3)) }
}
for (let i = 0; i < 2000 / K; i++) await round()
const cpu = () => { const c = process.cpuUsage(); return c.user + c.system }
const c0 = cpu(), t0 = performance.now()
for (let i = 0; i < N / K; i++) await round()
const us = cpu() - c0, wall = performance.now() - t0
console.log(JSON.stringify({root: root.split('/').pop(), k: K, cpu_us_per_text: Math.round(us / N), msgs_per_s: Math.round(N / (wall / 1000))}))
a.close(); b.close(); await server.stop(); await store.close(); rmSync(dir, {recursive: true, force: true})
