// Broker CPU per message of mq send/recv code paths (MessageSender, MessageReceiver + receiveLoop), per
// variant, on one private broker, variants interleaved round by round.
//   node scripts/e2e-broker-ab/broker-cpu.mjs DIST ROUNDS VARIANT...     VARIANT = mode:size[:spinUs]
//   mode plain|native; size in bytes (fewer messages above 1 KiB: N * 1024 / size, at least 200; window and
//   prefetch at most 64 MiB of payload); spinUs busy-waits that long per message in the producer and in the sink (a slow
//   client, like the encrypted run's, with plaintext bytes). Env: N (messages per run, 10000), WIN
//   (publish window, 512), PF (prefetch, 512), BENV (JSON env for the broker, e.g. NODE_OPTIONS).
// VARIANT may end in :m (a non-durable queue; default durable). Each run also reports the broker's GCs
// (major = mark-compacts, minor = scavenges, from gc-count.cjs) and its RSS.
// Broker CPU comes from /proc/PID/task/*/schedstat (ns), split into the main thread, V8's platform
// threads (concurrent marking, sweeping: spawned first) and the rest (store writer, libuv).
import {generateKeyPairSync, randomBytes} from 'node:crypto'
import {mkdtempSync, readFileSync, readdirSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

const dist = resolve(process.argv[2])
const rounds = Number(process.argv[3])
const variants = process.argv.slice(4)
const L = (p) => import(join(dist, 'src/lib', p))
const {spawnPrivateBroker} = await L('client/spawn.js')
const {connectBroker} = await L('client/connect.js')
const {MqHome} = await L('config/home.js')
const {loadConfig} = await L('config/load.js')
const {MessageReceiver, receiveLoop} = await L('crypto/recv.js')
const {ReplayGuard} = await L('crypto/replay.js')
const {MessageSender} = await L('crypto/send.js')

// the broker counts its GCs into gcDir (gc-count.cjs, preloaded)
const gcDir = mkdtempSync(join(tmpdir(), 'mq-e2e-broker-ab-gc-'))
const benv = process.env.BENV ? JSON.parse(process.env.BENV) : {}
const priv = await spawnPrivateBroker({env: {...benv, MQ_AB_GC_DIR: gcDir, NODE_OPTIONS: `${benv.NODE_OPTIONS ?? ''} --require ${fileURLToPath(new URL('gc-count.cjs', import.meta.url))}`}})
const pid = priv.proc.pid
const config = loadConfig({home: priv.home}).config
const connect = () => connectBroker(new MqHome(priv.home), config, {broker: `127.0.0.1:${priv.port}`, identity: 'admin', timeoutMs: 30_000})

const gc = () => { try { return JSON.parse(readFileSync(join(gcDir, String(pid)), 'utf8')) } catch { return {major: 0, minor: 0, ms: 0} } }
/** seconds on CPU per thread class */
function threads() {
  const o = {main: 0, v8: 0, other: 0}
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const ns = Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0])
      o[Number(t) === pid ? 'main' : Number(t) - pid <= 10 ? 'v8' : 'other'] += ns / 1e9
    } catch {}
  }
  return o
}

const spin = (us) => {
  if (!us) return
  const t = process.hrtime.bigint() + BigInt(us * 1000)
  while (process.hrtime.bigint() < t);
}

const enc = generateKeyPairSync('rsa', {modulusLength: 2048})
const sig = generateKeyPairSync('rsa', {modulusLength: 2048})
const scratch = mkdtempSync(join(tmpdir(), 'mq-e2e-broker-ab-'))
const producer = await connect()
const consumer = await connect()
const N = Number(process.env.N ?? 10_000)

async function run(v, n0 = N) {
  const n = Math.max(200, Math.round(n0 * Math.min(1, 1024 / Number(v.split(':')[1]))))
  const [mode, sizeS, spinS, dur] = v.split(':')
  const us = Number(spinS ?? 0)
  const queue = `ab.${mode}.${randomBytes(4).toString('hex')}`
  await producer.declareQueue(queue, {durable: dur !== 'm'})
  const replay = await ReplayGuard.open(new MqHome(scratch), `ab-${queue}`)
  const sender = new MessageSender(producer, {
    exchange: '', format: mode, grantEvery: config.e2e.grant_every, maxMessages: config.e2e.key_max_messages,
    recipients: mode === 'native' ? [{encPublicKey: enc.publicKey, name: 'bob'}] : [], routingKey: queue,
    sender: {name: 'alice', signPrivateKey: sig.privateKey}, window: Math.max(4, Math.min(Number(process.env.WIN ?? 512), Math.floor(64 * 2 ** 20 / Number(sizeS)))),
  })
  const receiver = new MessageReceiver({accept: [mode], identity: {encPrivateKey: enc.privateKey, name: 'bob'}, inPlace: true, replay, resolveSender: async () => sig.publicKey})
  const payload = randomBytes(Number(sizeS))
  const sink = {write() { spin(us) }, async flush() {}}
  const g0 = gc()
  const th0 = threads()
  const t0 = process.hrtime.bigint()
  const recv = receiveLoop(consumer, receiver, sink, {count: n, idleTimeoutMs: 30_000, prefetch: Math.max(4, Math.min(Number(process.env.PF ?? 512), Math.floor(64 * 2 ** 20 / Number(sizeS)))), queue})
  const confirms = []
  for (let i = 0; i < n; i++) {
    spin(us)
    confirms.push((await sender.enqueue(payload)).done)
  }
  await Promise.all(confirms)
  const r = await recv
  const sec = Number(process.hrtime.bigint() - t0) / 1e9
  const th1 = threads()
  const g1 = gc()
  await replay.close()
  await producer.deleteQueue(queue).catch(() => {})
  if (r.accepted !== n) throw new Error(`${v}: received ${r.accepted} of ${n}`)
  const per = (k) => +(((th1[k] - th0[k]) * 1e6) / n).toFixed(1)
  return {v, gcMajor: g1.major - g0.major, gcMinor: g1.minor - g0.minor, gcMs: Math.round(g1.ms - g0.ms), rssMB: Math.round(Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) / 1024), perSec: Math.round(n / sec), main: per('main'), v8: per('v8'), other: per('other'), total: +(per('main') + per('v8') + per('other')).toFixed(1)}
}

for (const v of variants) await run(v, 2000) // warm-up
const res = Object.fromEntries(variants.map((v) => [v, []]))
for (let i = 0; i < rounds; i++) for (const v of variants) {
  const r = await run(v)
  res[v].push(r)
  console.log(JSON.stringify(r))
}
const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1]
for (const v of variants) {
  const rs = res[v]
  const tot = rs.map((r) => r.total).sort((a, b) => a - b)
  console.log(`${v}: broker us/msg ${tot.join(' ')} (main ${med(rs.map((r) => r.main))}, v8 threads ${med(rs.map((r) => r.v8))}, other ${med(rs.map((r) => r.other))}); msg/s ${rs.map((r) => r.perSec).join(' ')}`)
}
await producer.close()
await consumer.close()
await priv.stop()
rmSync(scratch, {force: true, recursive: true})
rmSync(gcDir, {force: true, recursive: true})
