import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {after, describe, it} from 'node:test'
import {fileURLToPath} from 'node:url'
import {Worker} from 'node:worker_threads'

import type {Message} from '../../../src/lib/broker/message.js'
import {DurableStore, StoreOpener, StoreSealer, openGroup, openRecord, openSplit, rowAad, sealGroup, sealRecord, sealSplit, storeKeyId} from '../../../src/lib/broker/store.js'
import {useNativeCrypto} from '../../../src/lib/util/native-crypto.js'
import {tempHome} from '../../helpers/home.js'

/**
 * Sealing at rest through the native addon (StoreSealer / StoreOpener) makes the bytes node:crypto
 * makes: a store written with the addon opens with MQ_NATIVE_CRYPTO=0, and the reverse.
 */
const ADDON = fileURLToPath(new URL('../../../../native/build/Release/mqcrypto.node', import.meta.url))
const built = existsSync(ADDON) && !['0', 'false', 'off', 'no'].includes((process.env.MQ_NATIVE_CRYPTO ?? '').toLowerCase())
const skip = built ? false : 'the native addon is not built (npm run build without a compiler) or MQ_NATIVE_CRYPTO=0'

/** a body in shared memory at an odd offset (as the frame parser hands big bodies over), or an ordinary one */
function body(size: number, seed: number, shared: boolean): Buffer {
  const b = shared ? Buffer.from(new SharedArrayBuffer(size + 5), 3, size) : Buffer.allocUnsafe(size)
  for (let i = 0; i < size; i++) b[i] = (i * 131 + seed * 7 + (i >> 9)) & 0xff
  return b
}

/** sizes that land in a group in broker.db, a group in a segment, and rows of their own (split) */
const SIZES = [0, 100, 40 * 1024, 64 * 1024, 70 * 1024 + 1, 1024 * 1024 + 3]

/** Switches the addon for this thread and for writer threads started afterwards (they read the environment). */
function useNative(on: boolean): void {
  if (on) delete process.env.MQ_NATIVE_CRYPTO
  else process.env.MQ_NATIVE_CRYPTO = '0'
  assert.equal(useNativeCrypto(on), on)
}

describe('store sealing at rest: native addon and node:crypto', {skip}, () => {
  const saved = process.env.MQ_NATIVE_CRYPTO
  after(() => {
    if (saved === undefined) delete process.env.MQ_NATIVE_CRYPTO
    else process.env.MQ_NATIVE_CRYPTO = saved
    useNativeCrypto(true)
  })

  it('the addon loads in a worker thread, where the store writer seals', async () => {
    const store = new URL('../../../src/lib/broker/store.js', import.meta.url).href
    const w = new Worker(`import('${store}').then((m) => require('node:worker_threads').parentPort.postMessage(new m.StoreSealer(Buffer.alloc(32, 1), 7).native))`, {eval: true})
    const native = await new Promise((resolve, reject) => {
      w.once('message', resolve)
      w.once('error', reject)
    })
    await w.terminate()
    assert.equal(native, true)
  })

  it('sealer and opener make and read the same bytes as sealSplit, sealGroup, sealRecord and their openers', () => {
    useNative(true)
    const key = randomBytes(32)
    const id = storeKeyId(key)
    const sealer = new StoreSealer(key, id)
    const opener = new StoreOpener(key, id)
    assert.equal(sealer.native, true)
    assert.equal(opener.native, true)
    for (const size of SIZES) {
      for (const shared of [false, true]) {
        const b = body(size, size, shared)
        const h = Buffer.from(JSON.stringify({k: 'v'.repeat(size % 7), n: size}))
        const aad = rowAad(id, `m-${size}`, 'q', 'ex', 'rk')
        // native seal -> node:crypto open, and node:crypto seal -> native open
        const s = sealer.split(aad, h, b)
        assert.equal(s.head.length, 12 + 4 + h.length + 16)
        assert.equal(s.body.length, size)
        const o = openSplit(key, aad, s.head, Buffer.from(s.body))
        assert.ok(o.body.equals(b), `split body ${size} shared=${shared}`)
        assert.equal(o.headers, h.toString())
        const n = sealSplit(key, aad, h, b)
        const o2 = opener.split(aad, n.head, n.body)
        assert.ok(o2.body.equals(b))
        assert.equal(o2.headers, h.toString())
        const r = opener.record(aad, sealRecord(key, aad, h, b))
        assert.ok(r.body.equals(b))
        assert.equal(r.headers, h.toString())
        // groups: the plaintext is any bytes
        const g = Buffer.from(sealer.group(size + 1, Buffer.from(b)))
        assert.equal(g.length, 12 + size + 16)
        assert.ok(openGroup(key, id, size + 1, g).equals(b))
        assert.ok(opener.group(size + 1, sealGroup(key, id, size + 1, Buffer.from(b))).equals(b))
        // bound to its AAD, group id and tag as before
        assert.throws(() => opener.split(rowAad(id, `m-${size}`, 'q2', 'ex', 'rk'), n.head, n.body))
        assert.throws(() => opener.group(size + 2, g))
        const bad = Buffer.from(g)
        bad[bad.length - 1] ^= 1
        assert.throws(() => openGroup(key, id, size + 1, bad))
        assert.throws(() => opener.group(size + 1, bad))
      }
    }
    // nonces are fresh per seal
    const a = sealer.split(rowAad(id, 'x', 'q', '', 'q'), Buffer.alloc(0), Buffer.alloc(10)).head.subarray(0, 12)
    const c = sealer.split(rowAad(id, 'x', 'q', '', 'q'), Buffer.alloc(0), Buffer.alloc(10)).head.subarray(0, 12)
    assert.ok(!a.equals(c))
    sealer.dispose()
    opener.dispose()
  })

  for (const [writer, reader] of [
    [true, false],
    [false, true],
  ] as const) {
    it(`a store written with ${writer ? 'the addon' : 'node:crypto'} reads back byte for byte with ${reader ? 'the addon' : 'MQ_NATIVE_CRYPTO=0'}`, async () => {
      const h = tempHome()
      const open = () => new DurableStore(join(h.dir, 'data'), 0, {keyFile: join(h.dir, 'secrets', 'broker.key')})
      try {
        useNative(writer)
        const st = open()
        const sent: Message[] = []
        let seq = 0
        for (let round = 0; round < 3; round++) {
          for (const size of SIZES) {
            seq++
            const m: Message = {body: body(size, seq, size >= 64 * 1024), deliveryCount: round, exchange: '', expiresAt: 0, headers: {n: String(seq), s: 'ü'.repeat(round)}, idHash1: 0, idHash2: 0, messageId: `m-${seq}`, redelivered: false, routingKey: 'q1', seq, timestamp: 1000 + seq}
            st.insertMessage('q1', m)
            sent.push(m)
          }
          // small ones of a commit are sealed in groups: some of 32 KiB or more go to a segment
          for (let i = 0; i < 40; i++) {
            seq++
            const m: Message = {body: body(1500, seq, false), deliveryCount: 0, exchange: 'ex', expiresAt: 0, headers: {}, idHash1: 0, idHash2: 0, messageId: `s-${seq}`, redelivered: false, routingKey: 'q1', seq, timestamp: 1000 + seq}
            st.insertMessage('q1', m)
            sent.push(m)
          }
          await st.flush()
        }
        await st.close()

        useNative(reader)
        const st2 = open()
        try {
          const got = st2.readQueue('q1', 0, Number.MAX_SAFE_INTEGER, 10_000, Number.MAX_SAFE_INTEGER)
          assert.equal(st2.unreadable.length, 0, JSON.stringify(st2.unreadable))
          assert.equal(got.messages.length, sent.length)
          for (const [i, m] of got.messages.entries()) {
            const want = sent[i]
            assert.equal(m.messageId, want.messageId)
            assert.ok(Buffer.from(m.body).equals(want.body), `body of ${want.messageId} (${want.body.length} bytes)`)
            assert.deepEqual(m.headers, want.headers)
            assert.equal(m.timestamp, want.timestamp)
          }
        } finally {
          await st2.close()
        }
      } finally {
        useNative(true)
        h.cleanup()
      }
    })
  }
})
