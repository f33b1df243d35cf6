/**
 * The chaos battery (issue 18): each scenario starts its own private servers, does damage while
 * traffic flows, then counts. `scale` shrinks counts and durations (1 = the issue's numbers).
 */
import {type ChildProcess, spawn} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {readFileSync, existsSync} from 'node:fs'
import {join} from 'node:path'
import {connect as tcpConnect} from 'node:net'

import {BIN, ROOT} from '../helpers/cli.js'
import {tempHome} from '../helpers/home.js'
import {freePort} from '../helpers/services.js'
import {spawnMq} from '../e2e/pipeline/spawn.js'
import {type BrokerProcess} from '../helpers/broker.js'
import {MqHome} from '../../src/lib/config/home.js'
import {clientTlsOptions} from '../../src/lib/pki/index.js'
import {type LedgerLine, Tally, payloadFor} from './ledger.js'
import {LOCKOUT_MS, Reconnecting, Stack, broker, brokerProbe, drain, drippers, ingest, pipeline, pipelineExtract, probe, publishAll, sleep, waitFor} from './cluster.js'

export interface Scenario {
  name: string
  what: string
  /** the issue-18 failure (fixed on branch edges-fix) this scenario exercises, if any */
  exercises?: string
  run(scale: number): Promise<LedgerLine>
}

const n = (full: number, scale: number, min = 1) => Math.max(min, Math.round(full * scale))
const ids = (prefix: string, count: number) => Array.from({length: count}, (_, i) => `c-${prefix}-${i}`)

/**
 * broker SIGKILL x3 during confirmed publishes; a publish whose confirm was lost is retried with the same
 * message id. The native PUBLISH has no deduplication (only the records plugin's in-process publishes
 * ask for it, broker/dedupe.ts), so a retried publish that had been committed is stored twice: counted as dup.
 */
async function brokerKill9(scale: number): Promise<LedgerLine> {
  let retries = 0
  const t0 = Date.now()
  const stack = new Stack()
  const tally = new Tally()
  const notes: string[] = []
  try {
    const b = await broker(stack)
    const conn = new Reconnecting(() => b)
    const c = await conn.get()
    await c.declareQueue('k9', {durable: true})
    const total = n(50_000, scale, 300)
    const marks = [0.25, 0.5, 0.75].map((f) => Math.floor(total * f))
    let kills = 0
    let killError: Error | undefined
    let killing: Promise<void> | undefined
    const pub = publishAll(conn, 'k9', ids('k9', total), tally, {
      onConfirm: (m) => {
        if (!killing && kills < marks.length && m >= marks[kills]) {
          kills++
          killing = (async () => {
            await b.kill9()
            await b.restart()
          })()
            .catch((error: Error) => void (killError ??= error))
            .finally(() => (killing = undefined))
        }
      },
      payload: (id) => payloadFor(id, 64),
      sameId: true,
      window: 64,
    })
    const {retries: r} = await Promise.race([pub, new Promise<never>((_, reject) => setInterval(() => killError && reject(killError), 500).unref())])
    retries = r
    await killing
    notes.push(`${kills} kills, ${retries} publishes retried`)
    await drain(conn, 'k9', tally)
    await conn.close()
  } finally {
    await stack.close()
  }
  return tally.line('broker-kill9-x3', t0, notes, false, retries)
}

/** SIGTERM of the broker mid-publish; publishers retry unconfirmed messages with a new id, as the issue's did. */
async function brokerSigterm(scale: number): Promise<LedgerLine> {
  const t0 = Date.now()
  const stack = new Stack()
  const tally = new Tally()
  const notes: string[] = []
  try {
    const b = await broker(stack)
    const conn = new Reconnecting(() => b)
    await (await conn.get()).declareQueue('term', {durable: true})
    const total = n(20_000, scale, 300)
    let stopping: Promise<void> | undefined
    let stopError: Error | undefined
    const {retries} = await publishAll(conn, 'term', ids('term', total), tally, {
      onConfirm: (m) => {
        if (!stopping && m >= total / 2) {
          stopping = (async () => {
            await b.stop()
            await b.restart()
          })().catch((error: Error) => void (stopError ??= error))
        }
      },
      payload: (id) => payloadFor(id, 64),
      sameId: false,
      window: 128,
    })
    await stopping
    if (stopError) throw stopError
    notes.push(`${retries} publishes unconfirmed at the stop were retried`)
    await drain(conn, 'term', tally)
    await conn.close()
  } finally {
    await stack.close()
  }
  return tally.line('broker-sigterm', t0, notes)
}

function spawnConsumer(b: BrokerProcess, queue: string, out: string, poison?: string): Promise<ChildProcess> {
  const p = spawn(process.execPath, [new URL('./consumer.js', import.meta.url).pathname, String(b.port), b.home, queue, out, ...(poison ? [poison] : [])], {cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe']})
  return new Promise((resolve, reject) => {
    let err = ''
    p.stderr!.on('data', (d: Buffer) => {
      err += d.toString()
      if (err.includes('consumer ready')) resolve(p)
    })
    p.once('exit', (code) => (err.includes('consumer ready') ? undefined : reject(new Error(`consumer exited ${code}: ${err}`))))
  })
}

const exited = (p: ChildProcess) => new Promise<void>((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once('exit', () => r())))

function readConsumerLog(out: string, tally: Tally): number {
  if (!existsSync(out)) return 0
  const lines = readFileSync(out, 'utf8').split('\n').filter(Boolean)
  for (const l of lines) {
    const [id, re, ok] = l.split(' ')
    tally.receive(id, ok === '1', re === '1')
  }
  return lines.length
}

/** A consumer process SIGKILLed 5 times mid-stream; unacknowledged messages must come back, flagged. */
async function consumerKill9(scale: number): Promise<LedgerLine> {
  const t0 = Date.now()
  const stack = new Stack()
  const tally = new Tally()
  const notes: string[] = []
  const work = stack.add(tempHome('mq-chaos-cons-'), (h) => h.cleanup())
  try {
    const b = await broker(stack)
    const conn = new Reconnecting(() => b)
    await (await conn.get()).declareQueue('cons', {durable: true})
    const total = n(20_000, scale, 200)
    await publishAll(conn, 'cons', ids('cons', total), tally, {payload: (id) => payloadFor(id, 200), sameId: true, window: 64})
    const out = join(work.dir, 'received.log')
    const lines = () => (existsSync(out) ? readFileSync(out, 'utf8').split('\n').length - 1 : 0)
    for (let k = 0; k < 5; k++) {
      const p = await spawnConsumer(b, 'cons', out)
      const before = lines()
      await waitFor(() => lines() >= before + Math.max(10, Math.floor(total / 8)) || p.exitCode !== null, 60_000, 20).catch(() => {})
      p.kill('SIGKILL')
      await exited(p)
    }
    const last = await spawnConsumer(b, 'cons', out)
    await waitFor(async () => {
      const q = (await (await conn.get()).listQueues()).find((x) => x.name === 'cons')
      return q !== undefined && q.messages === 0 && (q as {unacked?: number}).unacked !== undefined ? (q as {unacked: number}).unacked === 0 : q?.messages === 0
    }, 120_000, 200).catch(() => notes.push('queue not empty at the end'))
    await sleep(500)
    last.kill('SIGKILL')
    await exited(last)
    const got = readConsumerLog(out, tally)
    notes.push(`5 kills, ${got - tally.received} redeliveries of unacknowledged messages`)
    await conn.close()
  } finally {
    await stack.close()
  }
  return tally.line('consumer-kill9-x5', t0, notes)
}

/** A poison message kills its consumer every time; restarts (and a broker kill) until it is dead-lettered. */
async function poison(scale: number): Promise<LedgerLine> {
  const t0 = Date.now()
  const stack = new Stack()
  const tally = new Tally()
  const notes: string[] = []
  const work = stack.add(tempHome('mq-chaos-poison-'), (h) => h.cleanup())
  let extraFail = false
  try {
    const limit = 5
    const b = await broker(stack, {env: {MQ_BROKER_DELIVERY_LIMIT: String(limit)}})
    const conn = new Reconnecting(() => b)
    const c = await conn.get()
    await c.declareQueue('work.dlq', {durable: true})
    await c.declareQueue('work', {deadLetter: 'work.dlq', durable: true})
    const total = n(2000, scale, 50)
    const all = ids('work', total)
    const bad = all[Math.floor(total / 3)]
    await publishAll(conn, 'work', all, tally, {payload: (id) => payloadFor(id), sameId: true, window: 32})
    const out = join(work.dir, 'received.log')
    let restarts = 0
    let brokerKilled = false
    const end = Date.now() + 180_000
    while (Date.now() < end) {
      const p = await spawnConsumer(b, 'work', out, bad).catch(() => undefined)
      if (p) {
        await Promise.race([exited(p), sleep(3000)])
        if (p.exitCode === null) {
          p.kill('SIGKILL')
          await exited(p)
        }
      }
      restarts++
      if (!brokerKilled && restarts === 2) {
        brokerKilled = true
        await b.kill9()
        await b.restart()
      }
      const q = (await (await conn.get()).listQueues().catch(async () => (await conn.broken(await conn.get()), []))).find((x) => x.name === 'work')
      if (q && q.messages === 0) break
    }
    readConsumerLog(out, tally)
    // the poison message was confirmed but must be in the dead-letter queue, not delivered
    tally.confirmed.delete(bad)
    const dl: string[] = []
    for (;;) {
      const d = await (await conn.get()).get('work.dlq', {noAck: true})
      if (!d) break
      dl.push(d.body.toString().split('|')[0])
    }
    const poisonDead = dl.filter((x) => x === bad).length
    // messages delivered in the same prefetch window as the poison die with each crash too and reach the
    // delivery limit with it: they are dead-lettered (accounted for, not lost), which the note reports
    const innocent = dl.filter((x) => x !== bad)
    for (const id of innocent) tally.receive(id, true, true)
    notes.push(`consumer started ${restarts} times, broker killed once, delivery limit ${limit}, poison dead-lettered ${poisonDead}x, ${innocent.length} messages of its prefetch window dead-lettered with it`)
    if (poisonDead !== 1) extraFail = true
    if (tally.has(bad)) {
      notes.push('the poison message was acknowledged as processed')
      extraFail = true
    }
    await conn.close()
  } finally {
    await stack.close()
  }
  return tally.line('poison-restarts', t0, notes, extraFail)
}

/** Redis SIGKILLed with a backlog in the stream (workers paused), with and without persistence. */
function redisKill(aof: boolean) {
  return async (scale: number): Promise<LedgerLine> => {
    const t0 = Date.now()
    const stack = new Stack()
    const tally = new Tally()
    const notes: string[] = []
    try {
      const p = await pipeline(stack, {aof})
      const conn = new Reconnecting(() => p.broker)
      stack.add(conn, (c) => c.close())
      const w = p.workers[0].proc
      w.kill('SIGSTOP')
      const total = n(500, scale, 30)
      await Promise.all(
        ids(`redis${aof ? 'aof' : 'none'}`, total).map(async (id, i) => {
          await sleep(i)
          tally.send(id)
          const r = await ingest(p.client, payloadFor(id).toString(), id)
          if (r.id) tally.confirm(id)
        }),
      )
      notes.push(`backlog ${tally.confirmed.size} accepted while the worker was paused`)
      await p.redis.kill()
      await sleep(1000)
      await p.redis.start()
      w.kill('SIGCONT')
      await drain(conn, p.queue, tally, {extract: pipelineExtract, quietMs: n(60_000, scale, 20_000), timeoutMs: 180_000})
      const stopped = await p.workers[0].stop('SIGTERM')
      notes.push(`worker exit after SIGTERM: ${stopped}`)
    } finally {
      await stack.close()
    }
    return tally.line(aof ? 'redis-kill9-aof' : 'redis-kill9-no-persist', t0, notes)
  }
}

/** MariaDB (the records store) stopped, or SIGSTOPped (hung), for 30 s while clients keep sending. */
function mariadbOutage(mode: 'stop' | 'sigstop') {
  return async (scale: number): Promise<LedgerLine> => {
    const t0 = Date.now()
    const stack = new Stack()
    const tally = new Tally()
    const notes: string[] = []
    let extraFail = false
    try {
      const p = await pipeline(stack, {mariadb: true})
      const conn = new Reconnecting(() => p.broker)
      stack.add(conn, (c) => c.close())
      const outage = n(30_000, scale, 5000)
      let stop = false
      let k = 0
      let refused = 0
      const sender = async () => {
        while (!stop) {
          const id = `c-db${mode}-${k++}`
          tally.send(id)
          // a careful client: the same Idempotency-Key until accepted
          for (let a = 0; !stop || a === 0; a++) {
            const r = await ingest(p.client, payloadFor(id).toString(), id)
            if (r.id) {
              tally.confirm(id)
              break
            }
            refused++
            await sleep(200)
            if (stop && a > 50) break
          }
          await sleep(50)
        }
      }
      const senders = [sender(), sender(), sender()]
      await sleep(2000)
      if (mode === 'stop') await p.mariadb!.stop()
      else p.mariadb!.signal('SIGSTOP')
      await sleep(outage)
      if (mode === 'stop') await p.mariadb!.start()
      else p.mariadb!.signal('SIGCONT')
      await sleep(3000)
      stop = true
      await Promise.all(senders)
      notes.push(`${outage / 1000} s outage, ${refused} refusals`)
      await drain(conn, p.queue, tally, {extract: pipelineExtract, quietMs: 30_000, timeoutMs: 120_000})
      // records left 'queued' that no one will ever deliver (answered 503, recorded later)
      const mysql = await import('mysql2/promise')
      const db = await mysql.createConnection(p.mariadb!.url)
      try {
        await sleep(2000)
        const [rows] = (await db.query("SELECT COUNT(*) AS n FROM messages WHERE status = 'queued'")) as [{n: number}[], unknown]
        const stuck = Number(rows[0].n)
        notes.push(`${stuck} records stuck 'queued'`)
        if (stuck > 0) extraFail = true
      } finally {
        await db.end()
      }
    } finally {
      await stack.close()
    }
    return tally.line(mode === 'stop' ? 'mariadb-stopped-30s' : 'mariadb-sigstop-30s', t0, notes, extraFail)
  }
}

/** proxy --processes 2 and two workers started at once on a fresh home; 3,000 requests, none may be refused. */
async function firstStartRace(scale: number): Promise<LedgerLine> {
  const t0 = Date.now()
  const stack = new Stack()
  const tally = new Tally()
  const notes: string[] = []
  let refused = 0
  try {
    const p = await pipeline(stack, {concurrentStart: true, processes: 2, workers: 2})
    const conn = new Reconnecting(() => p.broker)
    stack.add(conn, (c) => c.close())
    const total = n(3000, scale, 100)
    const codes = new Map<string, number>()
    let next = 0
    const all = ids('race', total)
    await Promise.all(
      Array.from({length: 16}, async () => {
        while (next < all.length) {
          const id = all[next++]
          tally.send(id)
          const r = await ingest(p.client, payloadFor(id).toString())
          if (r.id) tally.confirm(id)
          else {
            refused++
            codes.set(`${r.status} ${r.code}`, (codes.get(`${r.status} ${r.code}`) ?? 0) + 1)
          }
        }
      }),
    )
    notes.push(`${refused} refused${codes.size ? ` (${[...codes].map(([c, k]) => `${k}x ${c}`).join(', ')})` : ''}`)
    await drain(conn, p.queue, tally, {extract: pipelineExtract, quietMs: 30_000})
  } finally {
    await stack.close()
  }
  return tally.line('first-start-race', t0, notes, refused > 0)
}

/** A TLS ClientHello's first bytes (record header + handshake header), dripped a byte at a time. */
const clientHelloStart = () => Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), randomBytes(64)])

/** 1,000 sockets dripping a ClientHello into the broker's TLS ports while a normal client works. */
async function handshakeDrip(scale: number): Promise<LedgerLine> {
  const t0 = Date.now()
  const stack = new Stack()
  const tally = new Tally()
  const notes: string[] = []
  let extraFail = false
  try {
    const b = await broker(stack)
    const count = n(1000, scale, 50)
    const hold = n(45_000, scale, 15_000)
    const native = drippers(Math.ceil(count * 0.8), b.port, clientHelloStart, 2000)
    const api = drippers(Math.floor(count * 0.2), b.apiPort, clientHelloStart, 2000)
    stack.add(native, (d) => d.stop())
    stack.add(api, (d) => d.stop())
    await sleep(1000)
    const pr = probe(brokerProbe(b), 500)
    await sleep(hold)
    const r = await pr.stop()
    const stillOpen = native.open() + api.open()
    notes.push(`normal client ${r.ok} ok / ${r.failed} failed, p50 ${r.p50} ms p99 ${r.p99} ms max ${r.max} ms${r.errors.length ? ` (${r.errors.slice(0, 2).join(' | ')})` : ''}`)
    notes.push(`${stillOpen} of ${count} drip sockets still open after ${hold / 1000} s (handshake deadline 10 s)`)
    tally.served(r.ok)
    if (r.longestOutageMs >= LOCKOUT_MS || stillOpen > 0) extraFail = true
    if (r.failed > 0) notes.push(`longest time the normal client was refused: ${r.longestOutageMs} ms (locked out at ${LOCKOUT_MS} ms)`)
  } finally {
    await stack.close()
  }
  return tally.line('handshake-drip-1000', t0, notes, extraFail)
}

/** After a complete handshake: frames dripped a byte at a time (native), lines without a newline (CipherMQ). */
async function slowDrip(scale: number): Promise<LedgerLine> {
  const t0 = Date.now()
  const stack = new Stack()
  const tally = new Tally()
  const notes: string[] = []
  let extraFail = false
  try {
    const b = await broker(stack, {ciphermq: true})
    const tls = {...clientTlsOptions(new MqHome(b.home), 'admin'), checkServerIdentity: () => undefined, host: '127.0.0.1'}
    const hold = n(45_000, scale, 15_000)
    const nat = drippers(n(200, scale, 20), b.port, () => Buffer.from('HELLO 1 identity=admin version=1\nPUBLISH 2 exchange= key=q 100000\n' + 'x'.repeat(200)), 2000, {tls})
    const cmq = drippers(n(300, scale, 260), b.ciphermqPort!, () => Buffer.from('publish default_exchange k {"message_id":"' + 'x'.repeat(400)), 2000)
    stack.add(nat, (d) => d.stop())
    stack.add(cmq, (d) => d.stop())
    await sleep(1000)
    const prNative = probe(brokerProbe(b), 500)
    const prCmq = probe(
      () =>
        new Promise<void>((resolve, reject) => {
          const s = tcpConnect({host: '127.0.0.1', port: b.ciphermqPort!})
          let got = ''
          const t = setTimeout(() => (s.destroy(), reject(new Error('no reply in 5 s'))), 5000)
          s.on('error', (e) => (clearTimeout(t), reject(e)))
          s.on('data', (d) => {
            got += d.toString()
            if (got.includes('\n')) {
              clearTimeout(t)
              s.destroy()
              if (/too many connections/.test(got)) reject(new Error(got.trim()))
              else resolve()
            }
          })
          s.on('connect', () => s.write('declare_queue chaos_probe\n'))
        }),
      500,
    )
    await sleep(hold)
    const rn = await prNative.stop()
    const rc = await prCmq.stop()
    notes.push(`native client ${rn.ok} ok / ${rn.failed} failed (p99 ${rn.p99} ms); CipherMQ client ${rc.ok} ok / ${rc.failed} failed${rc.errors.length ? ` (${rc.errors[0]})` : ''}`)
    notes.push(`still open after ${hold / 1000} s: ${nat.open()} native drippers, ${cmq.open()} CipherMQ drippers`)
    tally.served(rn.ok + rc.ok)
    // a refusal in the first second of a flood (before an unproven connection may be pushed out) is retried
    // and gets in: only a client that stays out is locked out
    if (rn.longestOutageMs >= LOCKOUT_MS || rc.longestOutageMs >= LOCKOUT_MS || cmq.open() > 0 || nat.open() > 0) extraFail = true
    if (rn.failed + rc.failed > 0) notes.push(`longest time a normal client was refused: native ${rn.longestOutageMs} ms, CipherMQ ${rc.longestOutageMs} ms (locked out at ${LOCKOUT_MS} ms)`)
  } finally {
    await stack.close()
  }
  return tally.line('slow-drip-after-hs', t0, notes, extraFail)
}

/** 200 connections of random bytes to every listener; every server must stay up and keep serving. */
async function randomBytesAll(scale: number): Promise<LedgerLine> {
  const t0 = Date.now()
  const stack = new Stack()
  const tally = new Tally()
  const notes: string[] = []
  let extraFail = false
  try {
    const p = await pipeline(stack, {})
    const relayPort = await freePort()
    const relayTls = await freePort()
    const relay = stack.add(await spawnMq(['relay', 'start', '--port', String(relayPort), '--tls'], {...p.env, MQ_RELAY_TLS_PORT: String(relayTls)}, 'relay listening'), (r) => r.stop('SIGKILL'))
    const cmqPort = await freePort()
    const cmqHome = stack.add(tempHome('mq-chaos-cmq-'), (h) => h.cleanup()).dir
    const cmq = stack.add(await spawnMq(['broker', 'start', '--port', String(await freePort()), '--api-port', String(await freePort()), '--ciphermq', '--ciphermq-port', String(cmqPort), '--home', cmqHome], {}, 'broker ready'), (x) => x.stop('SIGKILL'))
    const listeners: [string, number][] = [
      ['broker', p.broker.port],
      ['broker-api', p.broker.apiPort],
      ['proxy', p.proxyPort],
      ['relay', relayPort],
      ['relay-tls', relayTls],
      ['ciphermq', cmqPort],
    ]
    const per = n(200, scale, 20)
    for (const [name, port] of listeners) {
      await Promise.all(
        Array.from(
          {length: per},
          () =>
            new Promise<void>((resolve) => {
              const s = tcpConnect({host: '127.0.0.1', port})
              s.on('error', () => resolve())
              s.on('close', () => resolve())
              s.on('connect', () => {
                s.write(randomBytes(1 + Math.floor(Math.random() * 4096)))
                setTimeout(() => s.destroy(), 50 + Math.random() * 200)
              })
            }),
        ),
      )
      tally.send(name)
    }
    await sleep(1000)
    // every server still serves a normal request
    const checks: [string, () => Promise<void>][] = [
      ['broker', brokerProbe(p.broker)],
      [
        'proxy',
        async () => {
          const r = await ingest(p.client, payloadFor('c-rb-1').toString())
          if (!r.id) throw new Error(`proxy answered ${r.status} ${r.code}`)
        },
      ],
    ]
    const dead = [['worker', p.workers[0].proc], ['proxy', p.proxy.proc], ['relay', relay.proc], ['ciphermq broker', cmq.proc], ['broker', p.broker.proc]].filter(([, proc]) => (proc as ChildProcess).exitCode !== null || (proc as ChildProcess).signalCode !== null)
    for (const [name, fn] of checks) {
      try {
        await fn()
        tally.confirm(name)
        tally.receive(name, true, false)
      } catch (error) {
        notes.push(`${name} failed after the noise: ${(error as Error).message}`)
        extraFail = true
      }
    }
    if (dead.length) {
      notes.push(`died: ${dead.map(([x]) => x).join(', ')}`)
      extraFail = true
    }
    notes.push(`${per} connections to each of ${listeners.map(([x]) => x).join(', ')}; here sent = listeners hit, confirmed/received = normal requests served afterwards`)
  } finally {
    await stack.close()
  }
  const l = tally.line('random-bytes-200', t0, notes, extraFail)
  // the ledger counts listeners here: sent = listeners hit, confirmed/received = servers that still served
  l.lost = 0
  return l
}

export const SCENARIOS: Scenario[] = [
  {exercises: '8 (concurrent first starts)', name: 'first-start-race', run: firstStartRace, what: 'proxy --processes 2 and two workers started at once on a fresh home, 3,000 requests, none refused'},
  {name: 'broker-kill9-x3', run: brokerKill9, what: 'broker SIGKILL x3 during 50,000 confirmed publishes'},
  {name: 'consumer-kill9-x5', run: consumerKill9, what: 'a consumer process SIGKILLed 5 times mid-stream'},
  {name: 'poison-restarts', run: poison, what: 'a poison message that kills its consumer, consumer restarts and a broker kill: dead-lettered once, the rest delivered'},
  {exercises: '6 (worker after Redis restarts)', name: 'redis-kill9-aof', run: redisKill(true), what: 'Redis SIGKILLed with a backlog, AOF on'},
  {exercises: '3 (Redis without persistence), 6', name: 'redis-kill9-no-persist', run: redisKill(false), what: 'Redis SIGKILLed with a backlog, no AOF and no RDB'},
  {name: 'mariadb-stopped-30s', run: mariadbOutage('stop'), what: 'MariaDB (records store) stopped for 30 s while clients send'},
  {exercises: '4 (records orphaned on a MySQL hang)', name: 'mariadb-sigstop-30s', run: mariadbOutage('sigstop'), what: 'MariaDB SIGSTOPped (hung) for 30 s while clients send'},
  {exercises: '5 (SIGTERM drops confirms)', name: 'broker-sigterm', run: brokerSigterm, what: 'SIGTERM of the broker mid-publish; unconfirmed publishes retried as new messages'},
  {exercises: '1 (handshake drip)', name: 'handshake-drip-1000', run: handshakeDrip, what: '1,000 sockets dripping a ClientHello into the broker and API ports; a normal client must keep working'},
  {exercises: '2 (CipherMQ drip)', name: 'slow-drip-after-hs', run: slowDrip, what: 'frames dripped after a complete handshake, and CipherMQ lines without a newline; normal clients keep working'},
  {name: 'random-bytes-200', run: randomBytesAll, what: '200 connections of random bytes to every listener (broker, API, CipherMQ, proxy, relay, relay TLS)'},
]
