import assert from 'node:assert/strict'
import {generateKeyPairSync, randomBytes} from 'node:crypto'
import {after, describe, it} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {encryptCipherMq} from '../../../src/lib/crypto/ciphermq.js'
import {EnvelopeOpener} from '../../../src/lib/crypto/envelope.js'
import {type LoopDelivery, MessageReceiver, outRecord, parseDuration, payloadText, receiveLoop} from '../../../src/lib/crypto/recv.js'
import {ReplayGuard} from '../../../src/lib/crypto/replay.js'
import {MessageSender, type Publisher, parseHeaders, splitLines} from '../../../src/lib/crypto/send.js'
import {MqError} from '../../../src/lib/errors.js'
import {nativeCrypto, useNativeCrypto} from '../../../src/lib/util/native-crypto.js'
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

  it('names each message with a time-ordered UUIDv7 (plain too), later milliseconds sorting later; replays still refused after a restart', async () => {
    // the receiver's replay database is keyed by (sender, id): ids that grow with time are appended there
    // instead of each landing on a random page
    const v7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
    const pub = new Recorder()
    const sender = new MessageSender(pub, {exchange: '', format: 'native', recipients: [{encPublicKey: enc.publicKey, name: 'bob'}], routingKey: 'q', sender: {name: 'alice', signPrivateKey: sig.privateKey}})
    for (let i = 0; i < 40; i++) {
      await (await sender.enqueue(Buffer.from(`m${i}`))).done
      if (i % 10 === 9) await new Promise((r) => setTimeout(r, 3))
    }
    const ids = pub.bodies.map((b) => b.messageId ?? '')
    for (const id of ids) assert.match(id, v7)
    assert.equal(new Set(ids).size, ids.length)
    const ms = ids.map((id) => id.slice(0, 13))
    assert.ok(new Set(ms).size >= 2)
    for (let i = 1; i < ids.length; i++) assert.ok(ms[i] >= ms[i - 1], `id ${i} sorts before the one sent earlier`)
    const plain = new Recorder()
    await (await new MessageSender(plain, {exchange: '', format: 'plain', recipients: [], routingKey: 'q'}).enqueue(Buffer.from('p'))).done
    assert.match(plain.bodies[0].messageId ?? '', v7)
    // every one accepted once, and refused as a replay by the next run
    const home = new MqHome(h.dir)
    let replay = await ReplayGuard.open(home, 'bob-v7')
    const rx = new MessageReceiver({accept: ['native'], identity: {encPrivateKey: enc.privateKey, name: 'bob'}, replay, resolveSender: async () => sig.publicKey})
    const ds = pub.bodies.map((b) => ({body: Buffer.from(b.body), headers: b.headers ?? {}, messageId: b.messageId ?? '', queue: 'q'}))
    for (const d of ds) {
      const m = await rx.open(d)
      assert.equal(m.message_id, d.messageId)
      rx.accepted(m, d)
    }
    await rx.begin()
    await rx.commit()
    await replay.close()
    replay = await ReplayGuard.open(home, 'bob-v7')
    const again = new MessageReceiver({accept: ['native'], identity: {encPrivateKey: enc.privateKey, name: 'bob'}, replay, resolveSender: async () => sig.publicKey})
    for (const b of [pub.bodies[0], pub.bodies[39]]) await assert.rejects(again.open({body: Buffer.from(b.body), headers: {}, messageId: 'republished'}), (e: MqError) => e.code === 'E_REPLAY')
    await replay.close()
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

  it('seals a big envelope into the buffer of one the broker confirmed, never of one in flight or failed; each opens as its message', async () => {
    const sent: {pieces: Buffer[]; joined: Buffer}[] = []
    const settle: {ok: () => void; fail: () => void}[] = []
    const pub: Publisher = {
      publish: (_e, _k, body, opts) =>
        new Promise((resolve, reject) => {
          const pieces = [...(body as Buffer[])]
          // what the broker gets: the bytes as they are when published
          sent.push({joined: Buffer.concat(pieces), pieces})
          settle.push({fail: () => reject(new Error('connection lost')), ok: () => resolve({messageId: opts?.messageId ?? 'x'})})
        }),
    }
    const sender = new MessageSender(pub, {exchange: '', format: 'native', recipients: [{encPublicKey: enc.publicKey, name: 'bob'}], routingKey: 'q', sender: {name: 'alice', signPrivateKey: sig.privateKey}, window: 4})
    const payloads = [0, 1, 2, 3].map(() => randomBytes(64 * 1024))
    const done = [await sender.enqueue(payloads[0]), await sender.enqueue(payloads[1])].map((x) => x.done)
    // the ciphertext's memory (with the addon a view of the envelope's buffer; node:crypto's update() makes its own)
    const bufferOf = (i: number): ArrayBufferLike => sent[i].pieces[1].buffer
    assert.notEqual(bufferOf(1), bufferOf(0), 'a message in flight keeps its buffer')
    settle[0].ok()
    settle[1].fail()
    await done[0]
    await done[1].catch(() => {})
    done.push((await sender.enqueue(payloads[2])).done, (await sender.enqueue(payloads[3])).done)
    if (nativeCrypto()) assert.equal(bufferOf(2), bufferOf(0), "the confirmed message's buffer is reused")
    for (const i of [2, 3]) assert.notEqual(bufferOf(i), bufferOf(1), "a failed publish's buffer (perhaps still queued on the socket) is not")
    assert.notEqual(bufferOf(3), bufferOf(2))
    settle[2].ok()
    settle[3].ok()
    await Promise.all(done.slice(2))
    // the bytes the broker got open as their messages, with the addon and with node:crypto
    for (const native of [true, false]) {
      useNativeCrypto(native)
      try {
        const opener = new EnvelopeOpener({identity: {encPrivateKey: enc.privateKey, name: 'bob'}, resolveSender: async () => sig.publicKey})
        for (const i of [0, 1, 2, 3]) assert.ok((await opener.open(sent[i].joined)).payload.equals(payloads[i]), `message ${i}, addon ${native}`)
      } finally {
        useNativeCrypto(true)
      }
    }
  })

  it('a publish that throws at once with a spare buffer in use does not hand that buffer out twice', async (t) => {
    if (!nativeCrypto()) return t.skip('the addon is not built: node:crypto seals into buffers of its own')
    const sent: Buffer[][] = []
    const confirms: (() => void)[] = []
    let refuseNext = false
    const pub: Publisher = {
      publish: (_e, _k, body, opts) => {
        if (refuseNext) {
          refuseNext = false
          throw new Error('not connected')
        }
        sent.push([...(body as Buffer[])])
        return new Promise((resolve) => confirms.push(() => resolve({messageId: opts?.messageId ?? 'x'})))
      },
    }
    const sender = new MessageSender(pub, {exchange: '', format: 'native', recipients: [{encPublicKey: enc.publicKey, name: 'bob'}], routingKey: 'q', sender: {name: 'alice', signPrivateKey: sig.privateKey}, window: 4})
    const big = () => randomBytes(64 * 1024)
    const first = await sender.enqueue(big())
    confirms[0]()
    await first.done
    // the next message is longer than the first one's buffer (so it takes a fresh one and the spare
    // goes back), then its publish throws
    refuseNext = true
    await assert.rejects(sender.enqueue(randomBytes(65 * 1024)), /not connected/)
    const a = await sender.enqueue(big())
    const b = await sender.enqueue(big())
    assert.notEqual(sent[1][1].buffer, sent[2][1].buffer, 'two messages in flight share one buffer')
    confirms[1]()
    confirms[2]()
    await Promise.all([a.done, b.done])
  })

  it('with inPlace (mq recv) opens each delivery over its own body: the same message, and a copy of it is still a replay', async () => {
    const pub = new Recorder()
    const sender = new MessageSender(pub, {exchange: '', format: 'native', recipients: [{encPublicKey: enc.publicKey, name: 'bob'}], routingKey: 'q', sender: {name: 'alice', signPrivateKey: sig.privateKey}})
    const payload = randomBytes(70_000)
    await (await sender.enqueue(payload)).done
    const sent = pub.bodies[0].body
    const replay = await ReplayGuard.open(new MqHome(h.dir), 'bob-in-place')
    const rx = new MessageReceiver({accept: ['native'], identity: {encPrivateKey: enc.privateKey, name: 'bob'}, inPlace: true, replay, resolveSender: async () => sig.publicKey})
    const d = {body: Buffer.from(sent), headers: {}, messageId: 'b1'}
    const m = await rx.open(d)
    assert.ok(m.payload.equals(payload))
    assert.equal(m.format, 'native')
    assert.equal(m.verified, true)
    rx.accepted(m, d)
    await rx.begin()
    await rx.commit()
    await assert.rejects(rx.open({body: Buffer.from(sent), headers: {}, messageId: 'b2'}), (e: MqError) => e.code === 'E_REPLAY')
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
