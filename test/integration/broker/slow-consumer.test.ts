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

// ~26 MB (40,000 messages of 200-1100 bytes): far more than the socket's kernel buffers and the
// broker's 1 MiB backlog, so most frames wait in the broker's socket while later ones are built.
// batch=1: DELIVERS frames cut from the delivery slabs; without it: DELIVER frames in the output arena.
describe('a consumer that reads slowly while many deliveries are in flight gets every message byte for byte: the broker never reuses output memory its socket has not written yet', () => {
  let srv: Awaited<ReturnType<typeof startPlainServer>>
  before(async () => {
    srv = await startPlainServer({permissionsFor: (identity) => ({...ALLOW_ALL, identity, roles: []})})
  })
  after(async () => {
    await srv.stop()
  })

  for (const batch of [true, false])
    test(`plain TCP, ${batch ? 'DELIVERS' : 'DELIVER'} frames`, async () => {
      const n = 40_000
      const queue = `slow-${batch}`
      srv.engine.declareQueue(queue)
      for (let i = 0; i < n; i++) srv.engine.publish('', queue, body(i), {messageId: `m${i}`})
      const sock = net.connect({host: '127.0.0.1', port: srv.port})
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
