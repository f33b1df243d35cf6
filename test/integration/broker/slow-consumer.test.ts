import assert from 'node:assert/strict'
import net from 'node:net'
import type {Duplex} from 'node:stream'
import tls from 'node:tls'
import {after, before, describe, test} from 'node:test'

import {ALLOW_ALL} from '../../../src/lib/broker/engine.js'
import {type Frame, FrameParser, parseDeliveries} from '../../../src/lib/wire/protocol.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {clientTlsOptions} from '../../../src/lib/pki/index.js'
import {type BrokerProcess, spawnBroker, startPlainServer} from '../../helpers/broker.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** message i's body: its own length (200-1100 bytes) and bytes, so a record overwritten by another message's shows */
function body(i: number): Buffer {
  const b = Buffer.allocUnsafe(200 + ((i * 37) % 900))
  for (let j = 0; j < b.length; j++) b[j] = (i * 131 + j * 7) & 0xff
  b.writeUInt32BE(i, 0)
  return b
}

/**
 * Consumes n messages of `queue` (published as body(i), message id m<i>) over `sock`, reading slowly:
 * nothing for half a second, then one chunk at a time with a pause after each, while the broker keeps
 * its socket's backlog full. Returns the first wrong message ('' for none) and how many arrived.
 */
async function consumeSlowly(sock: Duplex, queue: string, n: number, hello: string): Promise<{bad: string; got: number}> {
  const parser = new FrameParser(1 << 20, {wholeBodies: true})
  let next = 0
  let bad = ''
  const check = (id: string, b: Buffer) => {
    const want = body(next)
    if (!bad && (id !== `m${next}` || !b.equals(want))) bad = `message ${next}: got ${id}, ${b.length} bytes (starting ${b.length >= 4 ? b.readUInt32BE(0) : '-'}), want ${want.length} bytes`
    next++
  }
  const onFrame = (f: Frame) => {
    if (f.verb === 'DELIVERS') parseDeliveries(f.body, Number(f.args.count), (d) => check(d.messageId, d.body))
    else if (f.verb === 'DELIVER') check(f.args.message_id, f.body)
    else if (f.verb === 'ERR') bad ||= `ERR ${f.args.code}: ${f.args.message}`
  }
  const done = new Promise<void>((resolve, reject) => {
    sock.on('data', (d: Buffer) => {
      try {
        parser.push(d, onFrame, (e) => reject(e))
      } catch (error) {
        reject(error)
      }
      if (next === n || bad) resolve()
      sock.pause()
      setTimeout(() => sock.resume(), 2)
    })
    sock.on('error', reject)
    sock.on('close', () => resolve())
  })
  sock.write(`${hello}\nCONSUME 2 queue=${queue} prefetch=65535 no_ack=1\n`)
  sock.pause()
  await sleep(500)
  sock.resume()
  await done
  sock.destroy()
  return {bad, got: next}
}

type PlainServer = Awaited<ReturnType<typeof startPlainServer>>

/** A plain-TCP broker that allows everything, started before the enclosing describe's tests and stopped after them. */
function plainBroker(): {current: PlainServer} {
  const srv = {} as {current: PlainServer}
  before(async () => {
    srv.current = await startPlainServer({permissionsFor: (identity) => ({...ALLOW_ALL, identity, roles: []})})
  })
  after(async () => {
    await srv.current.stop()
  })
  return srv
}

// ~26 MB (40,000 messages of 200-1100 bytes): far more than the socket's kernel buffers and the
// broker's 1 MiB backlog, so most frames wait in the broker's socket while later ones are built.
// batch=1: DELIVERS frames cut from the delivery slabs; without it: DELIVER frames in the output arena.
describe('a consumer that reads slowly while many deliveries are in flight gets every message byte for byte: the broker never reuses output memory its socket has not written yet', () => {
  const srv = plainBroker()

  for (const batch of [true, false])
    test(`plain TCP, ${batch ? 'DELIVERS' : 'DELIVER'} frames`, async () => {
      const n = 40_000
      const queue = `slow-${batch}`
      srv.current.engine.declareQueue(queue)
      for (let i = 0; i < n; i++) srv.current.engine.publish('', queue, body(i), {messageId: `m${i}`})
      const sock = net.connect({host: '127.0.0.1', port: srv.current.port})
      await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject))
      assert.deepEqual(await consumeSlowly(sock, queue, n, `HELLO 1 version=1 identity=slow${batch ? ' batch=1' : ''}`), {bad: '', got: n})
    })
})

describe('the same over TLS (a spawned broker): frames wait in the TLS socket', () => {
  let b: BrokerProcess
  before(async () => {
    b = await spawnBroker()
  })
  after(async () => {
    await b.cleanup()
  })

  test('DELIVERS frames, TLS', async () => {
    const n = 40_000
    const pub = await b.connect('admin', {batchConfirms: true})
    try {
      await pub.declareQueue('slow')
      const confirms: Promise<unknown>[] = []
      for (let i = 0; i < n; i++) confirms.push(pub.publish('', 'slow', body(i), {messageId: `m${i}`}))
      await Promise.all(confirms)
    } finally {
      await pub.close()
    }
    const sock = tls.connect({...clientTlsOptions(new MqHome(b.home), 'admin'), checkServerIdentity: () => undefined, host: '127.0.0.1', port: b.port})
    await new Promise<void>((resolve, reject) => sock.once('secureConnect', resolve).once('error', reject))
    assert.deepEqual(await consumeSlowly(sock, 'slow', n, 'HELLO 1 version=1 batch=1'), {bad: '', got: n})
  })
})

/** message i of queue q: mostly small, some that grow a batch past its slab, some big (DELIVER of their own) */
function mixedBody(q: string, i: number): Buffer {
  const r = (i * 2_654_435_761 + q.charCodeAt(0)) >>> 0
  const size = r % 10 < 7 ? 50 + (r % 1500) : r % 10 < 9 ? 6000 + (r % 10_000) : 16 * 1024 + (r % 40_000)
  const b = Buffer.allocUnsafe(size)
  for (let j = 0; j < size; j++) b[j] = (r + j * 13) & 0xff
  b.writeUInt32BE(i, 0)
  return b
}

// two consumers on one connection, some messages with headers (DELIVER frames, in the arena between
// batches): small DELIVERS frames are copied into the arena, full ones leave behind the arena's
// region (corked) and big bodies go out on their own, all while the socket holds a full backlog
describe('two consumers on one slow connection, small and big bodies mixed: every byte arrives as published', () => {
  const srv = plainBroker()

  for (const batch of [true, false])
    test(`plain TCP, ${batch ? 'DELIVERS' : 'DELIVER'} frames`, async () => {
      const n = 6000
      const queues = [`mixa-${batch}`, `mixb-${batch}`]
      for (const q of queues) srv.current.engine.declareQueue(q)
      // the second queue skips every third message: runs to one consumer are of uneven lengths
      const want = new Map(queues.map((q) => [q, [] as number[]]))
      for (let i = 0; i < n; i++)
        for (const q of queues)
          if (q === queues[0] || i % 3 !== 0) {
            // headers: without batch_headers=1 such a message goes as a DELIVER, into the arena between batches
            srv.current.engine.publish('', q, mixedBody(q, i), {headers: i % 7 === 0 ? {h: `v${i}`} : undefined, messageId: `${q}:${i}`})
            want.get(q)!.push(i)
          }
      const total = want.get(queues[0])!.length + want.get(queues[1])!.length
      const sock = net.connect({host: '127.0.0.1', port: srv.current.port})
      await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject))
      const parser = new FrameParser(1 << 20, {wholeBodies: true})
      const at = new Map(queues.map((q) => [q, 0]))
      let got = 0
      let bad = ''
      const check = (id: string, b: Buffer, h: string | undefined) => {
        const q = id.slice(0, id.indexOf(':'))
        const k = at.get(q) ?? 0
        const i = want.get(q)?.[k]
        at.set(q, k + 1)
        got++
        if (!bad && (i === undefined || id !== `${q}:${i}` || !b.equals(mixedBody(q, i)) || h !== (i % 7 === 0 ? `v${i}` : undefined))) bad = `${got}th delivery: ${id} (h=${h}), ${b.length} bytes (starting ${b.length >= 4 ? b.readUInt32BE(0) : '-'}), want ${q}:${i}`
      }
      const done = new Promise<void>((resolve, reject) => {
        sock.on('data', (d: Buffer) => {
          try {
            parser.push(
              d,
              (f) => {
                if (f.verb === 'DELIVERS') parseDeliveries(f.body, Number(f.args.count), (x) => check(x.messageId, x.body, f.args['h.h']))
                else if (f.verb === 'DELIVER') check(f.args.message_id, f.body, f.args['h.h'])
                else if (f.verb === 'ERR') bad ||= `ERR ${f.args.code}: ${f.args.message}`
              },
              reject,
            )
          } catch (error) {
            reject(error)
          }
          if (got === total || bad) resolve()
          sock.pause()
          setTimeout(() => sock.resume(), 1)
        })
        sock.on('error', reject)
        sock.on('close', () => resolve())
      })
      sock.write(`HELLO 1 version=1 identity=mix${batch ? ' batch=1' : ''}\nCONSUME 2 queue=${queues[0]} prefetch=65535 no_ack=1\nCONSUME 3 queue=${queues[1]} prefetch=65535 no_ack=1\n`)
      sock.pause()
      await sleep(300)
      sock.resume()
      await done
      sock.destroy()
      assert.deepEqual({bad, got}, {bad: '', got: total})
    })
})
