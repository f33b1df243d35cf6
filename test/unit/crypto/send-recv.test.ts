import assert from 'node:assert/strict'
import {generateKeyPairSync} from 'node:crypto'
import {after, describe, it} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {encryptCipherMq} from '../../../src/lib/crypto/ciphermq.js'
import {EnvelopeOpener} from '../../../src/lib/crypto/envelope.js'
import {type LoopDelivery, MessageReceiver, outRecord, parseDuration, payloadText, receiveLoop} from '../../../src/lib/crypto/recv.js'
import {ReplayGuard} from '../../../src/lib/crypto/replay.js'
import {MessageSender, type Publisher, parseHeaders, splitLines} from '../../../src/lib/crypto/send.js'
import {MqError} from '../../../src/lib/errors.js'
import {tempHome} from '../../helpers/home.js'

const enc = generateKeyPairSync('rsa', {modulusLength: 2048})
const sig = generateKeyPairSync('rsa', {modulusLength: 2048})

/** Records what would go to the broker, confirming each publish. */
class Recorder implements Publisher {
  readonly bodies: {body: Buffer; headers?: Record<string, string>; messageId?: string; pieces?: number}[] = []
  async publish(_e: string, _k: string, body: Buffer | readonly Buffer[], opts: {messageId?: string; headers?: Record<string, string>} = {}) {
    // pieces are written one after the other: the broker gets them joined
    this.bodies.push(Buffer.isBuffer(body) ? {body, ...opts} : {body: Buffer.concat(body), pieces: body.length, ...opts})
    return {messageId: opts.messageId ?? 'x'}
  }
}

describe('send and recv helpers', () => {
  const h = tempHome()
  after(() => h.cleanup())

  it('splits --lines input on \\n and \\r\\n, without a trailing empty message', () => {
    assert.deepEqual(splitLines(Buffer.from('a\r\nb\n\nc')).map(String), ['a', 'b', '', 'c'])
    assert.deepEqual(splitLines(Buffer.from('a\n')).map(String), ['a'])
    assert.deepEqual(splitLines(Buffer.alloc(0)), [])
  })

  it('parses headers and durations, refusing bad ones', () => {
    assert.deepEqual(parseHeaders(['trace-id: abc', 'x:a:b']), {'trace-id': 'abc', x: 'a:b'})
    for (const bad of ['novalue', ':v', 'mq-format:x', 'sp ace:v']) assert.throws(() => parseHeaders([bad]), (e: MqError) => e.code === 'E_HEADER')
    assert.equal(parseDuration('500ms'), 500)
    assert.equal(parseDuration('1.5s'), 1500)
    assert.equal(parseDuration('2m'), 120_000)
    assert.throws(() => parseDuration('3'), (e: MqError) => e.code === 'E_DURATION' && /3s .*3ms/.test(e.hint ?? '')) // a bare number has no unit: refused
    assert.throws(() => parseDuration('soon'), (e: MqError) => e.code === 'E_DURATION')
  })

  it('reports payloads as UTF-8 when they are, else base64', () => {
    assert.deepEqual(payloadText(Buffer.from('hé')), {encoding: 'utf8', text: 'hé'})
    assert.deepEqual(payloadText(Buffer.from([0xff, 0xfe])), {encoding: 'base64', text: '//4='})
  })

  it('hands a big envelope to publish as its pieces (not joined into one buffer), which open as the message', async () => {
    const r = new Recorder()
    const sender = new MessageSender(r, {exchange: '', format: 'native', recipients: [{encPublicKey: enc.publicKey, name: 'bob'}], routingKey: 'q', sender: {name: 'alice', signPrivateKey: sig.privateKey}})
    const small = Buffer.alloc(1000, 1)
    const big = Buffer.alloc(64 * 1024, 2)
    const results = []
    for (const p of [small, big]) results.push(await (await sender.enqueue(p)).done)
    assert.equal(r.bodies[0].pieces, undefined)
    assert.equal(r.bodies[1].pieces, 3)
    assert.deepEqual(results.map((x) => x.envelope_bytes), r.bodies.map((b) => b.body.length))
    const opener = new EnvelopeOpener({identity: {encPrivateKey: enc.privateKey, name: 'bob'}, resolveSender: async () => sig.publicKey})
    for (const [i, p] of [small, big].entries()) assert.ok((await opener.open(r.bodies[i].body)).payload.equals(p))
  })

  it('refuses plaintext without --plain and ciphermq with several recipients', () => {
    const r = new Recorder()
    assert.throws(() => new MessageSender(r, {exchange: '', format: 'native', recipients: [], routingKey: 'q', sender: {name: 'alice', signPrivateKey: sig.privateKey}}), (e: MqError) => e.code === 'E_NO_RECIPIENTS')
    const two = [
      {encPublicKey: enc.publicKey, name: 'bob'},
      {encPublicKey: enc.publicKey, name: 'carol'},
    ]
    assert.throws(() => new MessageSender(r, {exchange: '', format: 'ciphermq', recipients: two, routingKey: 'q'}), (e: MqError) => e.code === 'E_CIPHERMQ_RECIPIENTS')
  })

  it('accepts only the formats asked for, and refuses a replay inside one batch and across runs', async () => {
    const pub = new Recorder()
    const sender = new MessageSender(pub, {exchange: '', format: 'native', headers: {k: 'v'}, recipients: [{encPublicKey: enc.publicKey, name: 'bob'}], routingKey: 'q', sender: {name: 'alice', signPrivateKey: sig.privateKey}})
    await (await sender.enqueue(Buffer.from('one'))).done
    const home = new MqHome(h.dir)
    const replay = await ReplayGuard.open(home, 'bob')
    const make = (accept: ('native' | 'ciphermq' | 'plain')[]) => new MessageReceiver({accept, identity: {encPrivateKey: enc.privateKey, name: 'bob'}, replay, resolveSender: async () => sig.publicKey})
    const d = {body: pub.bodies[0].body, headers: pub.bodies[0].headers ?? {}, messageId: pub.bodies[0].messageId ?? ''}
    assert.equal(pub.bodies[0].headers?.['mq-format'], 'native')
    const rx = make(['native'])
    const m = await rx.open(d)
    assert.equal(m.payload.toString(), 'one')
    assert.deepEqual(m.headers, {k: 'v'})
    rx.accepted(m, d)
    await assert.rejects(rx.open(d), (e: MqError) => e.code === 'E_REPLAY')
    await rx.commit()
    await assert.rejects(make(['native']).open(d), (e: MqError) => e.code === 'E_REPLAY')
    const cm = {body: Buffer.from(JSON.stringify(encryptCipherMq(Buffer.from('legacy'), enc.publicKey))), headers: {}, messageId: 'm2'}
    await assert.rejects(rx.open(cm), (e: MqError) => e.code === 'E_FORMAT_REFUSED')
    await assert.rejects(rx.open({body: Buffer.from('plain text'), headers: {}, messageId: 'm3'}), (e: MqError) => e.code === 'E_FORMAT_REFUSED')
    const legacy = await make(['ciphermq']).open(cm)
    assert.equal(legacy.payload.toString(), 'legacy')
    assert.equal(legacy.verified, false)
    assert.deepEqual(Object.keys(outRecord(legacy)).sort(), ['message', 'message_id', 'timestamp'])
    await replay.close()
  })

  it('keeps at most `window` publishes unconfirmed, and takes the next one as soon as one is confirmed', async () => {
    const confirms: (() => void)[] = []
    const pub: Publisher = {publish: async (_e, _k, _b, opts) => new Promise((r) => confirms.push(() => r({messageId: opts?.messageId ?? 'x'})))}
    const sender = new MessageSender(pub, {exchange: '', format: 'plain', recipients: [], routingKey: 'q', window: 2})
    const started: number[] = []
    const all = (async () => {
      for (let i = 0; i < 5; i++) {
        await sender.enqueue(Buffer.from(String(i)))
        started.push(i)
      }
    })()
    const settle = () => new Promise((r) => setImmediate(r))
    await settle()
    assert.deepEqual(started, [0, 1])
    confirms[1]() // out of order: any confirm frees a slot
    await settle()
    assert.deepEqual(started, [0, 1, 2])
    confirms[0]()
    confirms[2]()
    await settle()
    assert.deepEqual(started, [0, 1, 2, 3, 4])
    confirms[3]()
    confirms[4]()
    await all
  })

  it('handles the deliveries of one I/O turn as one batch, even when they arrive one callback at a time', async () => {
    const rx = new MessageReceiver({accept: ['plain'], identity: {encPrivateKey: enc.privateKey, name: 'bob'}, replay: null, resolveSender: async () => sig.publicKey})
    const acked: number[] = []
    const client = {
      ack: (t: number) => acked.push(t),
      consume: async (_q: string, _o: unknown, onMessage: (d: LoopDelivery) => void) => {
        // like a socket read of several TLS records: one callback per record, all in one turn
        for (let i = 1; i <= 6; i++) setImmediate(() => onMessage({body: Buffer.from(`m${i}`), deliveryTag: i, headers: {}, messageId: `id${i}`}))
        return {cancel: async () => {}}
      },
      nack: () => {},
      off: () => client,
      once: () => client,
      reject: () => {},
    }
    const batches: number[] = []
    let pending = 0
    const sink = {
      flush: async () => {
        batches.push(pending)
        pending = 0
      },
      write: () => {
        pending++
      },
    }
    const r = await receiveLoop(client, rx, sink, {count: 6, prefetch: 10, queue: 'q'})
    assert.equal(r.accepted, 6)
    assert.deepEqual(acked, [1, 2, 3, 4, 5, 6])
    assert.deepEqual(batches, [6])
  })
})
