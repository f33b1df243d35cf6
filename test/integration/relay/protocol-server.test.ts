import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {readdirSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {RelayConnection} from '../../../src/lib/relay/client.js'
import {Op, encodeRegisterPayload, encodeRequestHeader, encodeSendHeader, padFrame} from '../../../src/lib/relay/protocol.js'
import {tempHome} from '../../helpers/home.js'
import {RawClient, type RunningRelay, registerRaw, req, startRelay, v2Key, v3Key} from './harness.js'

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const le32 = (n: number) => {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(n)
  return b
}

describe('relay server: protocol versions and framings', () => {
  const home = tempHome('mq-relay-')
  let relay: RunningRelay

  before(async () => {
    relay = await startRelay({home: home.dir, idleTimeoutMs: 30_000})
  })
  after(async () => {
    await relay.stop()
    home.cleanup()
  })

  test('v2 exact frames: register, list, key, send, pull on one persistent connection', async () => {
    const c = await RawClient.connect(relay.port)
    try {
      // 600 register, built byte by byte: id 16 (ignored) | version 2 | 600 LE | 415 LE | name 255 | key 160
      const name = Buffer.alloc(255)
      name.write('v2-alice')
      const keyA = v2Key(0x11)
      c.write(Buffer.concat([Buffer.alloc(16, 0xee), hex('02 5802 9f010000'), name, keyA]))
      const r1 = await c.response()
      assert.equal(r1.version, 2)
      assert.equal(r1.code, 2100)
      assert.equal(r1.payload.length, 16)
      const alice = r1.payload
      const bob = await registerRaw(c, 2, 'v2-bob', v2Key(0x22))

      // 601 list from bob: alice appears (id 16 | name 255), bob does not
      c.write(Buffer.concat([bob, hex('02 5902 00000000')]))
      const r2 = await c.response()
      assert.equal(r2.code, 2101)
      assert.equal(r2.payload.length % 271, 0)
      const entries = []
      for (let o = 0; o < r2.payload.length; o += 271) entries.push({id: r2.payload.subarray(o, o + 16).toString('hex'), name: r2.payload.subarray(o + 16, o + 271).toString('latin1').replace(/\0.*$/s, '')})
      assert.ok(entries.some((e) => e.id === alice.toString('hex') && e.name === 'v2-alice'))
      assert.ok(!entries.some((e) => e.name === 'v2-bob'))

      // 602 public key of alice: id 16 | key 160
      c.write(Buffer.concat([bob, hex('02 5a02 10000000'), alice]))
      const r3 = await c.response()
      assert.equal(r3.code, 2102)
      assert.deepEqual(r3.payload, Buffer.concat([alice, keyA]))

      // 603 send a text (type 3, 5 bytes) to alice: dest 16 | type 1 | size 4 | content
      c.write(Buffer.concat([bob, hex('02 5b02 1a000000'), alice, hex('03 05000000'), Buffer.from('hello')]))
      const r4 = await c.response()
      assert.equal(r4.code, 2103)
      assert.deepEqual(r4.payload.subarray(0, 16), alice)
      const msgId = r4.payload.readUInt32LE(16)
      // and a type-1 key request with no content
      c.write(Buffer.concat([bob, hex('02 5b02 15000000'), alice, hex('01 00000000')]))
      const r5 = await c.response()
      assert.equal(r5.code, 2103)
      assert.notEqual(r5.payload.readUInt32LE(16), msgId)

      // 604 pull as alice: sender 16 | msg id 4 | type 1 | size 4 | content, oldest first
      c.write(Buffer.concat([alice, hex('02 5c02 00000000')]))
      const r6 = await c.response()
      assert.equal(r6.code, 2104)
      assert.deepEqual(r6.payload, Buffer.concat([bob, le32(msgId), hex('03 05000000'), Buffer.from('hello'), bob, le32(r5.payload.readUInt32LE(16)), hex('01 00000000')]))
      // delivered messages are gone
      c.write(Buffer.concat([alice, hex('02 5c02 00000000')]))
      assert.deepEqual(await c.response(), {code: 2104, payload: Buffer.alloc(0), version: 2})
    } finally {
      c.close()
    }
  })

  test('v1 exact frames: 100..104 answered with 1000..1004', async () => {
    const c = await RawClient.connect(relay.port)
    try {
      const name = Buffer.alloc(255)
      name.write('v1-carol')
      c.write(Buffer.concat([Buffer.alloc(16), hex('01 64 9f010000'), name, v2Key(0x33)]))
      const r1 = await c.response()
      assert.deepEqual([r1.version, r1.code, r1.payload.length], [1, 1000, 16])
      const carol = r1.payload
      const dave = await registerRaw(c, 1, 'v1-dave')
      c.write(Buffer.concat([carol, hex('01 65 00000000')]))
      const list = await c.response()
      assert.equal(list.code, 1001)
      assert.ok(list.payload.includes(dave))
      c.write(Buffer.concat([carol, hex('01 66 10000000'), dave]))
      const key = await c.response()
      assert.equal(key.code, 1002)
      assert.deepEqual(key.payload.subarray(0, 16), dave)
      assert.equal(key.payload.length, 176)
      c.write(Buffer.concat([carol, hex('01 67 18000000'), dave, hex('03 03000000'), Buffer.from('abc')]))
      const sent = await c.response()
      assert.equal(sent.code, 1003)
      c.write(Buffer.concat([dave, hex('01 68 00000000')]))
      const pulled = await c.response()
      assert.equal(pulled.code, 1004)
      assert.deepEqual(pulled.payload, Buffer.concat([carol, sent.payload.subarray(16, 20), hex('03 03000000'), Buffer.from('abc')]))
    } finally {
      c.close()
    }
  })

  test('v1 and v2 requests mix on one connection and across versions', async () => {
    const c = await RawClient.connect(relay.port)
    try {
      const a = await registerRaw(c, 1, 'mix-a')
      const b = await registerRaw(c, 2, 'mix-b')
      c.write(req(1, a, Op.send, Buffer.concat([encodeSendHeader(b, 3, 2), Buffer.from('hi')])))
      assert.equal((await c.response()).code, 1003)
      c.write(req(2, b, Op.pull))
      const r = await c.response()
      assert.equal(r.code, 2104)
      assert.deepEqual(r.payload.subarray(25), Buffer.from('hi'))
    } finally {
      c.close()
    }
  })

  test('padded framing: one request per connection, zero-padded to 1024, replies padded too', async () => {
    const pad = async (frame: Buffer) => {
      const c = await RawClient.connect(relay.port)
      try {
        c.write(padFrame(frame))
        return await c.paddedResponse()
      } finally {
        c.close()
      }
    }
    const name = Buffer.alloc(255)
    name.write('pad-erin')
    const reg = await pad(Buffer.concat([Buffer.alloc(16), hex('02 5802 9f010000'), name, v2Key(0x44)]))
    assert.equal(reg.code, 2100)
    assert.equal(reg.total, 1024)
    const erin = reg.payload
    name.fill(0)
    name.write('pad-frank')
    const frank = (await pad(Buffer.concat([Buffer.alloc(16), hex('02 5802 9f010000'), name, v2Key(0x55)]))).payload
    const list = await pad(req(2, erin, Op.list))
    assert.equal(list.code, 2101)
    assert.ok(list.payload.includes(frank))
    const key = await pad(req(2, erin, Op.publicKey, frank))
    assert.deepEqual([key.code, key.total], [2102, 1024])
    assert.deepEqual(key.payload, Buffer.concat([frank, v2Key(0x55)]))
    // a 603 whose content crosses a block boundary: 23 + 21 + 2000 bytes -> 2048 on the wire
    const content = randomBytes(2000)
    const sent = await pad(req(2, erin, Op.send, Buffer.concat([encodeSendHeader(frank, 4, content.length), content])))
    assert.equal(sent.code, 2103)
    const pulled = await pad(req(2, frank, Op.pull))
    assert.equal(pulled.code, 2104)
    assert.equal(pulled.total, 2048) // 7 + 25 + 2000, padded
    assert.deepEqual(pulled.payload.subarray(25), content)
    // a padded file big enough to stream to disk on the relay
    const big = randomBytes(100_000)
    const sentBig = await pad(req(2, erin, Op.send, Buffer.concat([encodeSendHeader(frank, 4, big.length), big])))
    assert.deepEqual([sentBig.code, sentBig.total], [2103, 1024])
    const pulledBig = await pad(req(2, frank, Op.pull))
    assert.equal(pulledBig.total % 1024, 0)
    assert.ok(pulledBig.payload.subarray(25).equals(big))
    // v1 padded too
    const v1 = await pad(req(1, frank, Op.list))
    assert.equal(v1.code, 1001)
  })

  test('padded framing quirk: 602 with payload size 0 and the target id in the padding', async () => {
    const c0 = await RawClient.connect(relay.port)
    const gina = await registerRaw(c0, 2, 'quirk-gina', v2Key(0x66))
    const hank = await registerRaw(c0, 2, 'quirk-hank')
    c0.close()
    const c = await RawClient.connect(relay.port)
    try {
      const frame = Buffer.alloc(1024)
      Buffer.concat([hank, hex('02 5a02 00000000'), gina]).copy(frame)
      c.write(frame)
      const r = await c.paddedResponse()
      assert.equal(r.code, 2102)
      assert.deepEqual(r.payload, Buffer.concat([gina, v2Key(0x66)]))
    } finally {
      c.close()
    }
    // from an unknown requester: one padded 9000
    const u = await RawClient.connect(relay.port)
    try {
      const frame = Buffer.alloc(1024)
      Buffer.concat([randomBytes(16), hex('02 5a02 00000000'), gina]).copy(frame)
      u.write(frame)
      const r = await u.paddedResponse()
      assert.deepEqual([r.code, r.total], [9000, 1024])
      assert.ok(await u.staysOpen(100))
    } finally {
      u.close()
    }
  })

  test('v3 registers RSA-2048 keys with a length prefix and refuses weak ones; v2 cannot fetch a v3 key', async () => {
    const c = await RawClient.connect(relay.port)
    try {
      const key = v3Key()
      const ivy = await registerRaw(c, 3, 'v3-ivy', key)
      const jack = await registerRaw(c, 3, 'v3-jack')
      c.write(req(3, jack, Op.publicKey, ivy))
      const r = await c.response()
      assert.equal(r.version, 3)
      assert.equal(r.code, 2102)
      assert.equal(r.payload.readUInt16LE(16), key.length)
      assert.deepEqual(r.payload.subarray(18), key)
      const weak = Buffer.concat([Buffer.alloc(255), Buffer.from([160, 0]), v2Key()])
      weak.write('v3-weak')
      c.write(req(3, Buffer.alloc(16), Op.register, weak))
      assert.equal((await c.response()).code, 9000)
      const v2user = await registerRaw(c, 2, 'v2-kim')
      c.write(req(2, v2user, Op.publicKey, ivy))
      assert.equal((await c.response()).code, 9000)
      c.write(req(3, ivy, Op.publicKey, v2user))
      assert.equal((await c.response()).code, 2102)
    } finally {
      c.close()
    }
  })

  test('a client streaming an over-limit file hears the 9000, not just a broken pipe', async () => {
    const c = await RawClient.connect(relay.port)
    const a = await registerRaw(c, 2, 'limit-a')
    const b = await registerRaw(c, 2, 'limit-b')
    c.close()
    const conn = await RelayConnection.connect({host: '127.0.0.1', port: relay.port}, 2)
    try {
      const size = 9 * 1024 * 1024 // the suite's relay takes 8 MiB files
      async function* chunks() {
        for (let i = 0; i < 9; i++) yield Buffer.alloc(1024 * 1024)
      }
      await assert.rejects(conn.send(a, Op.send, b, 4, size, chunks()), (error: Error & {code?: string}) => error.code === 'E_RELAY_REFUSED')
    } finally {
      conn.close()
    }
  })

  test("a burst of texts writes one row each and the sender's last-seen time once per second, not once per request", async () => {
    const c = await RawClient.connect(relay.port)
    const lastSeen = async (id: Buffer) => (await relay.store.sql.get<{t: string}>('SELECT last_seen AS t FROM relay_clients WHERE id = ?', [id]))!.t
    const changes = async () => Number((await relay.store.sql.get<{n: number}>('SELECT total_changes() AS n'))!.n)
    try {
      const a = await registerRaw(c, 2, 'burst-a')
      const b = await registerRaw(c, 2, 'burst-b')
      const registered = await lastSeen(a)
      await new Promise((r) => setTimeout(r, 5))
      const before = await changes()
      for (let i = 0; i < 50; i++) {
        c.write(req(2, a, Op.send, Buffer.concat([encodeSendHeader(b, 3, 4), Buffer.from('text')])))
        assert.equal((await c.response()).code, 2103)
      }
      // 50 inserts and one last_seen update (two if the burst crossed a second's boundary)
      assert.ok((await changes()) - before <= 52, `${(await changes()) - before} rows written for 50 texts`)
      const first = await lastSeen(a)
      assert.ok(first > registered, 'the first request updates last_seen')
      await new Promise((r) => setTimeout(r, 1100))
      c.write(req(2, a, Op.pull))
      assert.equal((await c.response()).code, 2104)
      assert.ok((await lastSeen(a)) > first, 'a request a second later updates it again')
    } finally {
      c.close()
    }
  })

  test('contents above the inline limit stream to a file that is deleted after delivery', async () => {
    const c = await RawClient.connect(relay.port)
    try {
      const a = await registerRaw(c, 2, 'file-a')
      const b = await registerRaw(c, 2, 'file-b')
      const content = randomBytes(3 * 1024 * 1024 + 5)
      c.write(req(2, a, Op.send, Buffer.concat([encodeSendHeader(b, 4, content.length), content])))
      assert.equal((await c.response()).code, 2103)
      const files = () => readdirSync(join(home.dir, 'data', 'relay-files'))
      assert.equal(files().filter((f) => f.endsWith('.msg')).length, 1)
      c.write(req(2, b, Op.pull))
      const r = await c.response()
      assert.equal(r.payload.readUInt32LE(21), content.length)
      assert.ok(r.payload.subarray(25).equals(content))
      // deletion happens right after the reply was written
      for (let i = 0; i < 50 && files().length > 0; i++) await new Promise((res) => setTimeout(res, 20))
      assert.deepEqual(files(), [])
    } finally {
      c.close()
    }
  })
})

describe('relay server: a file bigger than the write-ahead and the sync interval', () => {
  const home = tempHome('mq-relay-big-')
  let relay: RunningRelay

  before(async () => {
    relay = await startRelay({home: home.dir, idleTimeoutMs: 30_000, maxFileBytes: 64 * 1024 * 1024})
  })
  after(async () => {
    await relay.stop()
    home.cleanup()
  })

  // The relay writes a file in 1 MiB batches at their own offsets, several in flight at once (they
  // may complete in any order), with a datasync every 8 MiB: the stored bytes must still be the
  // sent ones, in order, whatever the socket's chunking (here 300 KiB writes, never batch-aligned).
  test('20 MiB + 3 bytes of distinct blocks come back byte for byte, and the file is gone after delivery', async () => {
    const a = await RelayConnection.connect({host: '127.0.0.1', port: relay.port}, 3)
    const b = await RelayConnection.connect({host: '127.0.0.1', port: relay.port}, 3)
    try {
      const idA = await a.call(Buffer.alloc(16), Op.register, encodeRegisterPayload(3, 'big-a', v3Key()), 'register')
      const idB = await b.call(Buffer.alloc(16), Op.register, encodeRegisterPayload(3, 'big-b', v3Key()), 'register')
      const size = 20 * 1024 * 1024 + 3
      const content = randomBytes(size)
      async function* chunks(): AsyncGenerator<Buffer> {
        for (let o = 0; o < size; o += 300 * 1024) yield content.subarray(o, Math.min(size, o + 300 * 1024))
      }
      await a.send(idA, Op.send, idB, 4, size, chunks())
      const got: Buffer[] = []
      assert.equal(await b.pull(idB, Op.pull, async (e, body) => {
        assert.equal(e.size, size)
        await body.stream((c) => {
          got.push(Buffer.from(c))
        })
      }), 1)
      assert.ok(Buffer.concat(got).equals(content), 'the pulled content equals the sent one')
      const files = () => readdirSync(join(home.dir, 'data', 'relay-files'))
      for (let i = 0; i < 50 && files().length > 0; i++) await new Promise((res) => setTimeout(res, 20))
      assert.deepEqual(files(), [])
    } finally {
      a.close()
      b.close()
    }
  })
  // A sender gone mid-file while its batches are being written: every write issued is waited for,
  // then the half-written file is removed, and the relay goes on serving.
  test('a file cut off mid-upload leaves no file behind', async () => {
    const c = await RawClient.connect(relay.port)
    const a = await registerRaw(c, 3, 'cut-a')
    const b = await registerRaw(c, 3, 'cut-b')
    const size = 12 * 1024 * 1024
    const sent = 7 * 1024 * 1024 + 11
    c.write(Buffer.concat([encodeRequestHeader(3, a, Op.send, 21 + size), encodeSendHeader(b, 4, size)]))
    for (let o = 0; o < sent; o += 256 * 1024) c.write(randomBytes(Math.min(256 * 1024, sent - o)))
    await new Promise((res) => setTimeout(res, 300))
    c.sock.destroy()
    const files = () => readdirSync(join(home.dir, 'data', 'relay-files'))
    for (let i = 0; i < 100 && files().length > 0; i++) await new Promise((res) => setTimeout(res, 20))
    assert.deepEqual(files(), [])
    const d = await RawClient.connect(relay.port)
    try {
      d.write(req(3, b, Op.pull))
      const r = await d.response()
      assert.equal(r.code, 2104)
      assert.equal(r.payload.length, 0, 'nothing was stored')
    } finally {
      d.sock.destroy()
    }
  })
})
