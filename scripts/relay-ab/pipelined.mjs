// usage: node pipelined.mjs ROOT N K -> CPU µs per text for N texts written K at a time (pipelined, then K acks read) through an in-process relay
const [root, nArg, kArg] = process.argv.slice(2)
const N = Number(nArg), K = Number(kArg ?? 16)
const {startPair} = await import('./setup.mjs')
const {a, idA, idB, sym, binding, plain, close, crypto: {encrypt}, protocol: {Op, MessageType, encodeRequestHeader, encodeSendHeader}} = await startPair(root)
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
await close()
