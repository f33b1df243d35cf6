import assert from 'node:assert/strict'
import {randomBytes, randomInt} from 'node:crypto'
import {connect} from 'node:net'
import {after, before, describe, test} from 'node:test'

import {Op, encodeRegisterPayload, encodeRequestHeader, encodeSendHeader, padFrame} from '../../../src/lib/relay/protocol.js'
import {tempHome} from '../../helpers/home.js'
import {RawClient, type RunningRelay, captureLogger, registerRaw, req, startRelay, v2Key, v3Key} from './harness.js'

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')

describe('relay server: malformed requests', () => {
  const home = tempHome('mq-relay-')
  const log = captureLogger()
  let relay: RunningRelay
  let alice: Buffer
  let bob: Buffer

  before(async () => {
    relay = await startRelay({home: home.dir, idleTimeoutMs: 400, logger: log.logger, maxTextBytes: 1000})
    const c = await RawClient.connect(relay.port)
    alice = await registerRaw(c, 2, 'alice')
    bob = await registerRaw(c, 2, 'bob')
    c.close()
  })
  after(async () => {
    await relay.stop()
    home.cleanup()
  })

  /** Sends `frame` then a valid list on the same connection: the bad one gets 9000, the next one is served. */
  async function refusedButServed(frame: Buffer): Promise<void> {
    const c = await RawClient.connect(relay.port)
    try {
      c.write(frame)
      const r = await c.response()
      assert.equal(r.code, 9000)
      assert.equal(r.payload.length, 0)
      c.write(req(2, alice, Op.list))
      assert.equal((await c.response()).code, 2101)
    } finally {
      c.close()
    }
  }

  test('a client that resets the connection after reading its complete answer is not logged as an error', async () => {
    const from = log.lines.length
    for (let i = 0; i < 5; i++) {
      const c = await RawClient.connect(relay.port)
      c.write(req(2, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 3, 2), Buffer.from('hi')])))
      assert.equal((await c.response()).code, 2103)
      c.sock.resetAndDestroy() // what the rdar-lab client does after every send: RST, not FIN
    }
    await new Promise((r) => setTimeout(r, 300))
    const logged = log.lines.slice(from)
    assert.deepEqual(logged.filter((l) => /ERROR|request failed|WARN/i.test(l)), [], logged.join('\n'))
  })

  test('refusals that keep the connection: duplicate name, unknown id, no NUL, wrong key length, bad type, size mismatch, over-limit text', async () => {
    const dup = Buffer.alloc(255)
    dup.write('alice')
    await refusedButServed(Buffer.concat([Buffer.alloc(16), hex('02 5802 9f010000'), dup, v2Key()]))
    await refusedButServed(req(2, randomBytes(16), Op.list))
    await refusedButServed(Buffer.concat([Buffer.alloc(16), hex('02 5802 9f010000'), Buffer.alloc(255, 0x41), v2Key()]))
    const short = Buffer.alloc(255)
    short.write('zed')
    await refusedButServed(Buffer.concat([Buffer.alloc(16), hex('02 5802 9e010000'), short, Buffer.alloc(159)]))
    await refusedButServed(req(2, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 7, 3), Buffer.from('abc')])))
    await refusedButServed(req(2, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 3, 5), Buffer.from('abc')])))
    await refusedButServed(req(2, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 3, 1001), Buffer.alloc(1001)])))
    await refusedButServed(req(2, alice, Op.send, Buffer.concat([encodeSendHeader(randomBytes(16), 3, 2), Buffer.from('hi')])))
    await refusedButServed(req(2, alice, Op.publicKey, randomBytes(16)))
    await refusedButServed(req(2, alice, Op.pull, Buffer.from('x')))
    assert.ok(log.lines.some((l) => /refused request/.test(l) && /peer=127\.0\.0\.1:\d+/.test(l)), 'refusals are logged with the peer address')
  })

  test('an unknown code gets 9000 and the connection closes', async () => {
    const c = await RawClient.connect(relay.port)
    c.write(Buffer.concat([alice, hex('02 5d02 00000000')]))
    const rest = await c.untilClosed()
    assert.equal(rest.readUInt16LE(1), 9000)
    assert.ok(log.lines.some((l) => /malformed request/.test(l) && /unknown request code/.test(l)))
  })

  test('a claimed size beyond the limits is refused before reading it', async () => {
    const c = await RawClient.connect(relay.port)
    c.write(Buffer.concat([encodeRequestHeader(2, alice, Op.send, 0xffffffff), encodeSendHeader(bob, 4, 0xffffffff - 21)]))
    const rest = await c.untilClosed()
    assert.equal(rest.readUInt16LE(1), 9000)
  })

  test('a truncated header and a stalled peer are closed without harm', async () => {
    const c = await RawClient.connect(relay.port)
    c.sock.end(Buffer.concat([alice, hex('02 59')]))
    assert.equal((await c.untilClosed()).length, 0)
    const s = await RawClient.connect(relay.port)
    s.write(Buffer.concat([alice, hex('02 5b02 20000000'), bob]))
    // idle timeout is 400 ms in this suite
    const t0 = Date.now()
    await s.untilClosed()
    assert.ok(Date.now() - t0 < 4000)
    assert.ok(log.lines.some((l) => /idle, stalled or too slow/.test(l)))
  })
})

test('a peer trickling a header byte by byte is cut off at the idle timeout, not kept alive by each byte', async () => {
  const home = tempHome('mq-relay-')
  const relay = await startRelay({home: home.dir, idleTimeoutMs: 500})
  try {
    const c = await RawClient.connect(relay.port)
    const frame = Buffer.concat([randomBytes(16), hex('02 5902 00000000')])
    let sent = 0
    const timer = setInterval(() => {
      if (sent < frame.length && !c.sock.destroyed) c.sock.write(frame.subarray(sent, ++sent))
    }, 150)
    try {
      await c.untilClosed()
      assert.ok(sent < frame.length, `closed after ${sent} of ${frame.length} bytes`)
    } finally {
      clearInterval(timer)
      c.close()
    }
  } finally {
    await relay.stop()
    home.cleanup()
  }
})

describe('relay server: fuzzing', () => {
  const home = tempHome('mq-relay-')
  const log = captureLogger('warn')
  let relay: RunningRelay

  before(async () => {
    relay = await startRelay({home: home.dir, idleTimeoutMs: 1000, logger: log.logger, maxFileBytes: 4 * 1024 * 1024, maxTextBytes: 64 * 1024})
  })
  after(async () => {
    await relay.stop()
    home.cleanup()
  })

  test('thousands of random and mutated frames never crash the relay or disturb stored messages', async () => {
    const c = await RawClient.connect(relay.port)
    const alice = await registerRaw(c, 2, 'fz-alice')
    const bob = await registerRaw(c, 1, 'fz-bob')
    const stored = [Buffer.from('first text'), randomBytes(200_000), Buffer.alloc(0)]
    const types = [3, 4, 1]
    for (let i = 0; i < stored.length; i++) {
      c.write(req(2, alice, Op.send, Buffer.concat([encodeSendHeader(bob, types[i], stored[i].length), stored[i]])))
      assert.equal((await c.response()).code, 2103)
    }
    c.close()

    // Valid frames to mutate; none pulls as bob, so bob's queue must come through untouched.
    const name = Buffer.alloc(255)
    name.write('fz-x')
    const seeds = [
      Buffer.concat([Buffer.alloc(16), hex('02 5802 9f010000'), name, v2Key()]),
      Buffer.concat([Buffer.alloc(16), hex('01 64 9f010000'), name, v2Key()]),
      req(2, alice, Op.list),
      req(1, alice, Op.list),
      req(2, alice, Op.publicKey, bob),
      req(2, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 3, 4), Buffer.from('fuzz')])),
      req(1, alice, Op.send, Buffer.concat([encodeSendHeader(alice, 4, 10), Buffer.alloc(10)])),
      req(2, alice, Op.pull),
      req(3, Buffer.alloc(16), Op.register, encodeRegisterPayload(3, 'fz-v3', v3Key())),
      req(3, alice, Op.publicKey, bob),
      req(3, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 2, 8), Buffer.alloc(8, 2)])),
    ]
    const frames: Buffer[] = []
    const N = 3000
    for (let i = 0; i < N; i++) {
      const kind = i % 4
      if (kind === 0) {
        frames.push(randomBytes(randomInt(0, 600)))
        continue
      }
      const f = Buffer.from(seeds[randomInt(seeds.length)])
      if (kind === 1) for (let k = randomInt(1, 6); k > 0; k--) f[randomInt(f.length)] = randomInt(256)
      if (kind === 2) {
        // random sizes in the header
        const at = f[17] >= 0x64 && f[17] <= 0x68 ? 18 : 19
        f.writeUInt32LE(randomInt(2) === 0 ? randomInt(0, 2000) : randomInt(0, 0xffffffff), at)
      }
      const cut = kind === 3 ? randomInt(0, f.length + 1) : f.length
      const g = f.subarray(0, cut)
      frames.push(randomInt(3) === 0 ? padFrame(Buffer.concat([g, randomBytes(randomInt(0, 40))])) : g)
    }
    const t0 = Date.now()
    let next = 0
    let replies = 0
    const worker = async () => {
      while (next < frames.length) {
        const frame = frames[next++]
        await new Promise<void>((resolve) => {
          const s = connect({host: '127.0.0.1', port: relay.port})
          const timer = setTimeout(() => s.destroy(), 5000)
          s.on('error', () => {})
          s.on('data', () => {
            replies++
          })
          s.on('close', () => {
            clearTimeout(timer)
            resolve()
          })
          s.end(frame)
        })
      }
    }
    await Promise.all(Array.from({length: 16}, worker))
    assert.ok(Date.now() - t0 < 90_000)
    assert.ok(replies > N / 2, `the relay kept answering (${replies} replies)`)
    assert.ok(!log.lines.some((l) => /connection handler failed/.test(l)), log.lines.filter((l) => /handler failed/.test(l)).join('\n'))

    // Still serving, and bob's stored messages arrive intact, in order.
    const d = await RawClient.connect(relay.port)
    try {
      const carl = await registerRaw(d, 2, 'fz-after')
      assert.equal(carl.length, 16)
      d.write(req(1, bob, Op.pull))
      const r = await d.response()
      assert.equal(r.code, 1004)
      const got: {from: string; type: number; content: Buffer}[] = []
      for (let o = 0; o < r.payload.length; ) {
        const size = r.payload.readUInt32LE(o + 21)
        got.push({content: r.payload.subarray(o + 25, o + 25 + size), from: r.payload.subarray(o, o + 16).toString('hex'), type: r.payload[o + 20]})
        o += 25 + size
      }
      const originals = got.slice(0, 3)
      assert.deepEqual(originals.map((g) => g.type), types)
      for (let i = 0; i < 3; i++) {
        assert.equal(originals[i].from, alice.toString('hex'))
        assert.ok(originals[i].content.equals(stored[i]), `message ${i} intact`)
      }
    } finally {
      d.close()
    }
  })
})

test('a store failure answers 9000 and closes instead of crashing', async () => {
  const home = tempHome('mq-relay-')
  const relay = await startRelay({home: home.dir})
  try {
    const c = await RawClient.connect(relay.port)
    const a = await registerRaw(c, 2, 'sf-a')
    await relay.store.close()
    c.write(req(2, a, Op.list))
    const rest = await c.untilClosed()
    assert.equal(rest.readUInt16LE(1), 9000)
  } finally {
    await relay.server.stop()
    home.cleanup()
  }
})
