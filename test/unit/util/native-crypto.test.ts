import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {type KeyObject, createCipheriv, createDecipheriv, createHash, createHmac, generateKeyPairSync, randomBytes} from 'node:crypto'
import {existsSync, mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {after, describe, it} from 'node:test'

import {EnvelopeOpener, EnvelopeSealer, parseEnvelope2} from '../../../src/lib/crypto/envelope.js'
import {type NativeCrypto, nativeCrypto, useNativeCrypto} from '../../../src/lib/util/native-crypto.js'
import {MqError} from '../../../src/lib/errors.js'

// from dist/test/unit/util: the addon `npm run build` makes, and the envelope suite
const ADDON = fileURLToPath(new URL('../../../../native/build/Release/mqcrypto.node', import.meta.url))
const ENVELOPE_SUITE = fileURLToPath(new URL('../crypto/envelope.test.js', import.meta.url))
// a build without a compiler (or MQ_NATIVE_BUILD=0) leaves no addon: then only the fallback is tested
const built = existsSync(ADDON) && !['0', 'false', 'off', 'no'].includes((process.env.MQ_NATIVE_CRYPTO ?? '').toLowerCase())
const skip = built ? false : 'the native addon is not built (npm run build without a compiler) or MQ_NATIVE_CRYPTO=0'

const nodeSeal = (key: Buffer, nonce: Buffer, aad: Buffer, pt: Buffer): Buffer => {
  const c = createCipheriv('aes-256-gcm', key, nonce, {authTagLength: 16})
  c.setAAD(aad)
  return Buffer.concat([c.update(pt), c.final(), c.getAuthTag()])
}

const nodeOpen = (key: Buffer, nonce: Buffer, aad: Buffer, sealed: Buffer): Buffer => {
  const d = createDecipheriv('aes-256-gcm', key, nonce, {authTagLength: 16})
  d.setAAD(aad)
  d.setAuthTag(sealed.subarray(sealed.length - 16))
  return Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()])
}

describe('native AES-256-GCM and HMAC (native/mqcrypto.c)', {skip}, () => {
  const n = (): NativeCrypto => {
    const x = nativeCrypto()
    assert.ok(x, 'the addon is built but does not load or fails its known-answer check')
    return x
  }
  const SIZES = [0, 1, 15, 16, 17, 255, 256, 4096, 65_536 + 3]

  it('loads and passes its known-answer check on this Node', () => {
    assert.equal(useNativeCrypto(true), true)
  })

  it('makes the same ciphertext and tag as node:crypto for the same key, nonce and AAD, and each opens the other', () => {
    const key = randomBytes(32)
    const seal = n().gcmKey(key, false)
    const open = n().gcmKey(key, true)
    for (const size of SIZES) {
      for (const aadLen of [0, 1, 90, 600]) {
        const nonce = randomBytes(12)
        const aad = randomBytes(aadLen)
        const pt = randomBytes(size)
        const want = nodeSeal(key, nonce, aad, pt)
        // written at an offset into a bigger buffer, as into an envelope after its prefix
        const out = Buffer.alloc(7 + size + 16 + 5, 0xee)
        n().gcmSeal(seal, nonce, aad, pt, out, 7)
        assert.ok(out.subarray(7, 7 + size + 16).equals(want), `size ${size}, aad ${aadLen}`)
        assert.ok(out.subarray(0, 7).equals(Buffer.alloc(7, 0xee)) && out.subarray(7 + size + 16).equals(Buffer.alloc(5, 0xee)), 'nothing outside its place is written')
        // node:crypto opens the addon's, the addon opens node:crypto's
        assert.ok(nodeOpen(key, nonce, aad, out.subarray(7, 7 + size + 16)).equals(pt))
        const back = Buffer.alloc(size)
        assert.equal(n().gcmOpen(open, nonce, aad, want.subarray(0, size), want.subarray(size), back), true)
        assert.ok(back.equals(pt))
      }
    }
  })

  it('gcmSeal2 seals head || body as gcmSeal seals them joined, the body also in shared memory, and refuses an output over either', () => {
    const x = n()
    assert.equal(typeof x.gcmSeal2, 'function')
    const key = randomBytes(32)
    const seal = x.gcmKey(key, false)
    for (const size of [0, 1, 16, 17, 4096, 65_536 + 3]) {
      for (const cut of [0, 1, 4, 15, 16, 23]) {
        if (cut > size) continue
        const nonce = randomBytes(12)
        const aad = randomBytes(40)
        const pt = randomBytes(size)
        const shared = Buffer.from(new SharedArrayBuffer(size - cut))
        shared.set(pt.subarray(cut))
        const out = Buffer.alloc(3 + size + 16 + 2, 0xee)
        x.gcmSeal2!(seal, nonce, aad, pt.subarray(0, cut), shared, out, 3)
        assert.ok(out.subarray(3, 3 + size + 16).equals(nodeSeal(key, nonce, aad, pt)), `size ${size}, cut at ${cut}`)
        assert.ok(out.subarray(0, 3).equals(Buffer.alloc(3, 0xee)) && out.subarray(3 + size + 16).equals(Buffer.alloc(2, 0xee)), 'nothing outside its place is written')
      }
    }
    const buf = Buffer.alloc(100)
    const throwsNative = (f: () => unknown, what: string): void => assert.throws(f, (e: Error & {code?: string}) => e.code === 'E_NATIVE_ARG', what)
    throwsNative(() => x.gcmSeal2!(seal, Buffer.alloc(12), Buffer.alloc(0), buf.subarray(0, 8), Buffer.alloc(32), buf, 4), 'output over the head')
    throwsNative(() => x.gcmSeal2!(seal, Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(8), buf.subarray(40, 70), buf, 0), 'output over the body')
    throwsNative(() => x.gcmSeal2!(seal, Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(8), Buffer.alloc(32), Buffer.alloc(55), 0), 'no room for the tag')
    x.gcmDispose(seal)
  })

  it('refuses a flipped byte of ciphertext, tag, AAD or nonce, and zeroes what it decrypted', () => {
    const key = randomBytes(32)
    const open = n().gcmKey(key, true)
    const nonce = randomBytes(12)
    const aad = randomBytes(64)
    const pt = randomBytes(300)
    const sealed = nodeSeal(key, nonce, aad, pt)
    const tries: [string, (c: Buffer, t: Buffer, a: Buffer, v: Buffer) => void][] = [
      ['ciphertext', (c) => void (c[123] ^= 1)],
      ['tag', (_c, t) => void (t[15] ^= 0x80)],
      ['aad', (_c, _t, a) => void (a[0] ^= 1)],
      ['nonce', (_c, _t, _a, v) => void (v[11] ^= 1)],
    ]
    for (const [what, tamper] of tries) {
      const c = Buffer.from(sealed.subarray(0, 300))
      const t = Buffer.from(sealed.subarray(300))
      const a = Buffer.from(aad)
      const v = Buffer.from(nonce)
      tamper(c, t, a, v)
      const out = Buffer.alloc(300, 0xaa)
      assert.equal(n().gcmOpen(open, v, a, c, t, out), false, what)
      assert.ok(out.equals(Buffer.alloc(300)), `${what}: no unauthenticated plaintext is left in out`)
    }
    // the same context still opens the genuine message afterwards
    const out = Buffer.alloc(300)
    assert.equal(n().gcmOpen(open, nonce, aad, sealed.subarray(0, 300), sealed.subarray(300), out), true)
    assert.ok(out.equals(pt))
  })

  it('opens in place (out is the ciphertext itself) to the plaintext node:crypto sealed, zeroes it when the tag fails, and refuses partial overlaps', () => {
    const x = n()
    assert.equal(x.openInPlace, true, 'this build opens in place (the known-answer check tried it)')
    const key = randomBytes(32)
    const open = x.gcmKey(key, true)
    for (const size of SIZES) {
      const nonce = randomBytes(12)
      const aad = randomBytes(90)
      const pt = randomBytes(size)
      const sealed = nodeSeal(key, nonce, aad, pt)
      const ct = sealed.subarray(0, size)
      assert.equal(x.gcmOpen(open, nonce, aad, ct, sealed.subarray(size), ct), true, `size ${size}`)
      assert.ok(ct.equals(pt), `size ${size}: the plaintext is where the ciphertext was`)
      assert.ok(sealed.subarray(size).equals(nodeSeal(key, nonce, aad, pt).subarray(size)), 'the tag after it is not touched')
      if (size === 0) continue
      const bad = nodeSeal(key, nonce, aad, pt)
      bad[bad.length - 1] ^= 1
      const badCt = bad.subarray(0, size)
      assert.equal(x.gcmOpen(open, nonce, aad, badCt, bad.subarray(size), badCt), false, `size ${size}, changed tag`)
      assert.ok(badCt.equals(Buffer.alloc(size)), `size ${size}: no unauthenticated plaintext is left`)
    }
    // shifted by a byte either way: not in place, an overlap, refused as before
    const buf = Buffer.alloc(64 + 16 + 2)
    const ct = buf.subarray(1, 65)
    for (const out of [buf.subarray(0, 64), buf.subarray(2, 66)]) {
      assert.throws(() => x.gcmOpen(open, Buffer.alloc(12), Buffer.alloc(0), ct, buf.subarray(65, 81), out), (e: Error & {code?: string}) => e.code === 'E_NATIVE_ARG')
    }
  })

  it('checks lengths and handles: 32-byte key, 96-bit nonce, 16-byte tag, room for the output, a live handle of the right kind', () => {
    const x = n()
    const key = randomBytes(32)
    const seal = x.gcmKey(key, false)
    const open = x.gcmKey(key, true)
    const pt = randomBytes(32)
    const sealed = nodeSeal(key, Buffer.alloc(12), Buffer.alloc(0), pt)
    const throwsNative = (f: () => unknown, what: string): void => assert.throws(f, (e: Error & {code?: string}) => e.code === 'E_NATIVE_ARG', what)
    throwsNative(() => x.gcmKey(randomBytes(31), false), 'short key')
    throwsNative(() => x.gcmKey(randomBytes(33), true), 'long key')
    for (const len of [0, 8, 11, 13, 16]) {
      throwsNative(() => x.gcmSeal(seal, Buffer.alloc(len), Buffer.alloc(0), pt, Buffer.alloc(48), 0), `seal nonce of ${len}`)
      throwsNative(() => x.gcmOpen(open, Buffer.alloc(len), Buffer.alloc(0), sealed.subarray(0, 32), sealed.subarray(32), Buffer.alloc(32)), `open nonce of ${len}`)
    }
    for (const len of [0, 4, 12, 15, 17]) throwsNative(() => x.gcmOpen(open, Buffer.alloc(12), Buffer.alloc(0), sealed.subarray(0, 32), Buffer.alloc(len), Buffer.alloc(32)), `tag of ${len}`)
    throwsNative(() => x.gcmSeal(seal, Buffer.alloc(12), Buffer.alloc(0), pt, Buffer.alloc(47), 0), 'no room for the tag')
    throwsNative(() => x.gcmSeal(seal, Buffer.alloc(12), Buffer.alloc(0), pt, Buffer.alloc(48), 1), 'no room after the offset')
    throwsNative(() => x.gcmOpen(open, Buffer.alloc(12), Buffer.alloc(0), sealed.subarray(0, 32), sealed.subarray(32), Buffer.alloc(31)), 'short output')
    const inPlace = Buffer.concat([pt, Buffer.alloc(16)])
    throwsNative(() => x.gcmSeal(seal, Buffer.alloc(12), Buffer.alloc(0), inPlace.subarray(0, 32), inPlace, 0), 'output over the input')
    // a sealing context does not open, an opening one does not seal, a MAC handle is neither
    throwsNative(() => x.gcmSeal(open, Buffer.alloc(12), Buffer.alloc(0), pt, Buffer.alloc(48), 0), 'seal with an opening key')
    throwsNative(() => x.gcmOpen(seal, Buffer.alloc(12), Buffer.alloc(0), sealed.subarray(0, 32), sealed.subarray(32), Buffer.alloc(32)), 'open with a sealing key')
    const mk = x.macKeys(randomBytes(32))
    throwsNative(() => x.gcmSeal(mk, Buffer.alloc(12), Buffer.alloc(0), pt, Buffer.alloc(48), 0), 'a MAC handle as a cipher')
    throwsNative(() => x.macs(seal, Buffer.alloc(0), pt, Buffer.alloc(16), 0), 'a cipher handle as MAC keys')
    throwsNative(() => x.gcmSeal({} as never, Buffer.alloc(12), Buffer.alloc(0), pt, Buffer.alloc(48), 0), 'not a handle')
    throwsNative(() => x.macKeys(randomBytes(33)), 'MAC keys not of 32 bytes')
    throwsNative(() => x.macs(mk, Buffer.alloc(0), pt, Buffer.alloc(15), 0), 'no room for the MAC')
    // disposed: its key is gone, and it says so instead of using freed memory
    x.gcmDispose(seal)
    x.gcmDispose(seal)
    throwsNative(() => x.gcmSeal(seal, Buffer.alloc(12), Buffer.alloc(0), pt, Buffer.alloc(48), 0), 'a disposed key')
    x.macDispose(mk)
    throwsNative(() => x.macs(mk, Buffer.alloc(0), pt, Buffer.alloc(16), 0), 'disposed MAC keys')
  })

  it('makes each HMAC-SHA256 (16 bytes) as createHmac does over head || SHA-256(payload), for 1 to 5 keys', () => {
    for (const count of [1, 2, 3, 5]) {
      const keys = randomBytes(32 * count)
      const mk = n().macKeys(keys)
      for (const size of [0, 256, 65_536]) {
        const head = randomBytes(90)
        const payload = randomBytes(size)
        const out = Buffer.alloc(3 + 16 * count, 0xee)
        n().macs(mk, head, payload, out, 3)
        const digest = createHash('sha256').update(payload).digest()
        for (let i = 0; i < count; i++) {
          const want = createHmac('sha256', keys.subarray(32 * i, 32 * i + 32)).update(head).update(digest).digest().subarray(0, 16)
          assert.ok(out.subarray(3 + 16 * i, 3 + 16 * i + 16).equals(want), `${count} keys, key ${i}, size ${size}`)
        }
      }
    }
  })

  it('makes HMAC-SHA256 as createHmac does for heads and payloads across SHA-256 block boundaries, and takes only 32-byte keys', () => {
    const x = n()
    // the inner hash reads head || 32-byte digest: totals of 32..1032 bytes, every boundary of a 64-byte block
    const HEADS = [0, 1, 23, 24, 31, 32, 33, 55, 56, 63, 64, 65, 1000]
    const PAYLOADS = [0, 1, 55, 56, 63, 64, 65, 1000]
    const keys = Buffer.concat([Buffer.alloc(32, 0xff), Buffer.alloc(32), randomBytes(32)])
    const mk = x.macKeys(keys)
    for (const h of HEADS) {
      for (const p of PAYLOADS) {
        const head = randomBytes(h)
        const payload = randomBytes(p)
        const out = Buffer.alloc(48)
        x.macs(mk, head, payload, out, 0)
        const digest = createHash('sha256').update(payload).digest()
        for (let i = 0; i < 3; i++) {
          const full = createHmac('sha256', keys.subarray(32 * i, 32 * i + 32)).update(Buffer.concat([head, digest])).digest()
          assert.ok(out.subarray(16 * i, 16 * i + 16).equals(full.subarray(0, 16)), `head ${h}, payload ${p}, key ${i}`)
        }
      }
    }
    x.macDispose(mk)
    for (const len of [0, 1, 16, 31, 33, 63, 65, 257 * 32]) assert.throws(() => x.macKeys(randomBytes(len)), (e: Error & {code?: string}) => e.code === 'E_NATIVE_ARG', `MAC keys of ${len} bytes`)
    x.macDispose(x.macKeys(randomBytes(256 * 32)))
  })

  it('takes an offset only as an integer 0..2^32-1 (no wrap of 2^32 + k, -1 or 1.5 to another place)', () => {
    const x = n()
    const seal = x.gcmKey(randomBytes(32), false)
    const mk = x.macKeys(randomBytes(32))
    for (const off of [2 ** 32 + 3, 2 ** 32, -1, -(2 ** 32) + 3, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '3' as unknown as number]) {
      const out = Buffer.alloc(64)
      assert.throws(() => x.gcmSeal(seal, randomBytes(12), Buffer.alloc(0), randomBytes(8), out, off), (e: Error & {code?: string}) => e.code === 'E_NATIVE_ARG', `seal at ${off}`)
      assert.throws(() => x.macs(mk, Buffer.alloc(3), Buffer.alloc(3), out, off), (e: Error & {code?: string}) => e.code === 'E_NATIVE_ARG', `macs at ${off}`)
      assert.ok(out.equals(Buffer.alloc(64)), `nothing written for ${off}`)
    }
    const out = Buffer.alloc(64)
    x.gcmSeal(seal, randomBytes(12), Buffer.alloc(0), randomBytes(8), out, 3)
    x.macs(mk, Buffer.alloc(3), Buffer.alloc(3), out, 40)
  })

  it('refuses MACs written over their own head or payload (a later key would MAC the changed head)', () => {
    const x = n()
    const mk = x.macKeys(randomBytes(64))
    const buf = Buffer.alloc(100, 7)
    assert.throws(() => x.macs(mk, buf.subarray(0, 48), Buffer.alloc(5), buf.subarray(32, 64), 0), (e: Error & {code?: string}) => e.code === 'E_NATIVE_ARG', 'over the head')
    assert.throws(() => x.macs(mk, Buffer.alloc(5), buf.subarray(0, 48), buf, 40), (e: Error & {code?: string}) => e.code === 'E_NATIVE_ARG', 'over the payload')
    assert.ok(buf.equals(Buffer.alloc(100, 7)))
    // right next to each other is fine
    x.macs(mk, buf.subarray(0, 48), buf.subarray(80), buf, 48)
  })

  it('does not decrypt into a SharedArrayBuffer (another thread could read plaintext before the tag is checked)', () => {
    const x = n()
    const key = randomBytes(32)
    const nonce = randomBytes(12)
    const sealed = nodeSeal(key, nonce, Buffer.alloc(0), randomBytes(40))
    const open = x.gcmKey(key, true)
    const shared = new Uint8Array(new SharedArrayBuffer(40))
    assert.throws(() => x.gcmOpen(open, nonce, Buffer.alloc(0), sealed.subarray(0, 40), sealed.subarray(40), shared), (e: Error & {code?: string}) => e.code === 'E_NATIVE_ARG')
    assert.ok(Buffer.from(shared.buffer).equals(Buffer.alloc(40)))
    // shared inputs (large wire bodies are SharedArrayBuffers) still open
    const sharedIn = new Uint8Array(new SharedArrayBuffer(56))
    sharedIn.set(sealed)
    assert.equal(x.gcmOpen(open, nonce, Buffer.alloc(0), sharedIn.subarray(0, 40), sharedIn.subarray(40), Buffer.alloc(40)), true)
  })

  it('reads plain Uint8Arrays at their byteOffset, and treats zero-length and detached buffers as empty', () => {
    const x = n()
    const at = (src: Buffer, off: number): Uint8Array => {
      const u = new Uint8Array(new ArrayBuffer(off + src.length + 5), off, src.length)
      u.set(src)
      return u
    }
    const key = randomBytes(32)
    const seal = x.gcmKey(at(key, 3), false)
    const open = x.gcmKey(at(key, 9), true)
    for (const size of [0, 1, 16, 33]) {
      const nonce = randomBytes(12)
      const aad = randomBytes(size)
      const pt = randomBytes(size)
      const want = nodeSeal(key, nonce, aad, pt)
      const out = new Uint8Array(new ArrayBuffer(size + 16 + 7), 7)
      x.gcmSeal(seal, at(nonce, 1), at(aad, 2), at(pt, 5), out, 0)
      assert.ok(Buffer.from(out).equals(want), `seal ${size}`)
      const back = new Uint8Array(new ArrayBuffer(size + 4), 4)
      assert.equal(x.gcmOpen(open, at(nonce, 6), at(aad, 1), at(want.subarray(0, size), 2), at(want.subarray(size), 3), back), true)
      assert.ok(Buffer.from(back).equals(pt), `open ${size}`)
    }
    const detached = (): Uint8Array => {
      const ab = new ArrayBuffer(48)
      const u = new Uint8Array(ab, 8, 32)
      structuredClone(ab, {transfer: [ab]})
      assert.equal(u.length, 0)
      return u
    }
    const nonce = randomBytes(12)
    const tagOnly = nodeSeal(key, nonce, Buffer.alloc(0), Buffer.alloc(0))
    const out = Buffer.alloc(16)
    x.gcmSeal(seal, nonce, detached(), detached(), out, 0)
    assert.ok(out.equals(tagOnly))
    assert.equal(x.gcmOpen(open, nonce, detached(), detached(), tagOnly, detached()), true)
    assert.equal(x.gcmOpen(open, nonce, new Uint8Array(0), Buffer.alloc(0), tagOnly, new Uint8Array(0)), true)
    for (const f of [() => x.gcmKey(detached(), false), () => x.gcmSeal(seal, detached(), Buffer.alloc(0), Buffer.alloc(0), Buffer.alloc(16), 0), () => x.gcmSeal(seal, nonce, Buffer.alloc(0), Buffer.alloc(0), detached(), 0), () => x.gcmOpen(open, nonce, Buffer.alloc(0), Buffer.alloc(0), detached(), Buffer.alloc(0)), () => x.macKeys(detached()), () => x.macs(x.macKeys(randomBytes(32)), Buffer.alloc(0), Buffer.alloc(0), detached(), 0)]) {
      assert.throws(f, (e: Error & {code?: string}) => e.code === 'E_NATIVE_ARG')
    }
    const macKey = randomBytes(32)
    const mac = Buffer.alloc(16)
    x.macs(x.macKeys(macKey), detached(), detached(), mac, 0)
    assert.ok(mac.equals(createHmac('sha256', macKey).update(createHash('sha256').digest()).digest().subarray(0, 16)))
  })

  it('is linked to bind every symbol at load (-z now): a missing OpenSSL symbol falls back instead of killing the process', (t) => {
    const r = spawnSync('readelf', ['-d', ADDON], {encoding: 'utf8'})
    if (r.error || r.status !== 0) return t.skip('no readelf')
    assert.match(r.stdout, /\(FLAGS\)\s+BIND_NOW|\(FLAGS_1\)\s+Flags:.*\bNOW\b/)
  })

  it("refuses another addon's external as a handle without reading through its pointer", (t) => {
    // a foreign external whose data pointer is not ours (16: reading it would crash the process)
    const dir = mkdtempSync(join(tmpdir(), 'mq-native-foreign-'))
    writeFileSync(
      join(dir, 'foreign.c'),
      `#include <node_api.h>
static napi_value mk(napi_env env, napi_callback_info i) { napi_value e; napi_create_external(env, (void *)16, NULL, NULL, &e); return e; }
NAPI_MODULE_INIT() { napi_value f; napi_create_function(env, "mk", 2, mk, NULL, &f); napi_set_named_property(env, exports, "mk", f); return exports; }
`,
    )
    const include = join(dirname(process.execPath), '..', 'include', 'node')
    const cc = spawnSync(process.env.CC ?? 'cc', ['-shared', '-fPIC', '-I', include, '-o', join(dir, 'foreign.node'), join(dir, 'foreign.c')], {encoding: 'utf8'})
    if (cc.error || cc.status !== 0) return t.skip('no C compiler or Node headers')
    const script = `
      const n = require(${JSON.stringify(ADDON)})
      const foreign = require(${JSON.stringify(join(dir, 'foreign.node'))}).mk()
      const calls = [
        () => n.gcmSeal(foreign, Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(0), Buffer.alloc(16), 0),
        () => n.gcmOpen(foreign, Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(0), Buffer.alloc(16), Buffer.alloc(0)),
        () => n.gcmDispose(foreign),
        () => n.macs(foreign, Buffer.alloc(0), Buffer.alloc(0), Buffer.alloc(16), 0),
        () => n.macDispose(foreign),
      ]
      for (const f of calls) { try { f(); console.log('accepted') } catch (e) { console.log(e.code) } }
    `
    const r = spawnSync(process.execPath, ['-e', script], {encoding: 'utf8', timeout: 30_000})
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`.slice(-2000))
    assert.deepEqual(r.stdout.trim().split('\n'), Array.from({length: 5}, () => 'E_NATIVE_ARG'))
  })

  it('works in worker threads, with handles disposed, left to the GC, or alive when the worker stops; a handle cannot be posted', () => {
    const script = `
      const {Worker, isMainThread, parentPort, MessageChannel} = require('node:worker_threads')
      const {randomBytes} = require('node:crypto')
      const n = require(${JSON.stringify(ADDON)})
      function work(rounds) {
        for (let i = 0; i < rounds; i++) {
          const key = randomBytes(32), nonce = randomBytes(12), pt = randomBytes(100)
          const s = n.gcmKey(key, false), o = n.gcmKey(key, true), m = n.macKeys(randomBytes(96))
          const out = Buffer.alloc(116)
          n.gcmSeal(s, nonce, Buffer.alloc(3), pt, out, 0)
          const back = Buffer.alloc(100)
          if (!n.gcmOpen(o, nonce, Buffer.alloc(3), out.subarray(0, 100), out.subarray(100), back) || !back.equals(pt)) throw new Error('round trip')
          n.macs(m, pt, pt, Buffer.alloc(48), 0)
          if (i % 3 === 0) { n.gcmDispose(s); n.gcmDispose(s); n.macDispose(m); n.macDispose(m); n.gcmDispose(o) }
          if (i % 3 === 1) n.gcmDispose(o)
        }
        if (global.gc) global.gc()
      }
      if (isMainThread) {
        const mc = new MessageChannel()
        let posted = true
        try { mc.port1.postMessage(n.gcmKey(randomBytes(32), false)) } catch (e) { posted = e.name !== 'DataCloneError' }
        mc.port1.close()
        if (posted) throw new Error('a handle was posted')
        const ws = [0, 1, 2, 3].map((i) => new Promise((resolve, reject) => {
          const w = new Worker(__filename, {eval: false})
          w.on('message', () => { if (i % 2) w.terminate() })
          w.on('error', reject)
          w.on('exit', resolve)
        }))
        work(300)
        Promise.all(ws).then(() => { work(100); global.gc(); console.log('ok') })
      } else {
        global.kept = [n.gcmKey(randomBytes(32), true), n.macKeys(randomBytes(32))]
        work(200)
        parentPort.postMessage('half')
        work(200)
      }
    `
    const file = join(mkdtempSync(join(tmpdir(), 'mq-native-')), 'workers.cjs')
    writeFileSync(file, script)
    const r = spawnSync(process.execPath, ['--expose-gc', file], {encoding: 'utf8', timeout: 60_000})
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`.slice(-3000))
    assert.match(r.stdout, /^ok$/m)
  })
})

interface TestIdentity {
  name: string
  enc: {publicKey: KeyObject; privateKey: KeyObject}
  sig: {publicKey: KeyObject; privateKey: KeyObject}
}
const ident = (name: string): TestIdentity => ({enc: generateKeyPairSync('rsa', {modulusLength: 2048}), name, sig: generateKeyPairSync('rsa', {modulusLength: 2048})})
const alice = ident('alice')
const bob = ident('bob')
const carol = ident('carol')
const dave = ident('dave')
const resolveSender = async (name: string): Promise<KeyObject> => [alice, bob, carol, dave].find((i) => i.name === name)!.sig.publicKey

/** keys made in `make` (a sealer's on its next seal, an opener's when it unwraps) use the addon or not */
function made<T>(native: boolean, make: () => T): T {
  useNativeCrypto(native)
  try {
    return make()
  } finally {
    useNativeCrypto(true)
  }
}

/** the same for an open(): the opener makes its key after awaiting the sender's certificate */
async function opened<T>(native: boolean, open: () => Promise<T>): Promise<T> {
  useNativeCrypto(native)
  try {
    return await open()
  } finally {
    useNativeCrypto(true)
  }
}

const rejects = async (p: Promise<unknown>, code: string): Promise<void> => {
  await assert.rejects(p, (e: unknown) => e instanceof MqError && e.code === code)
}

describe('the envelope with and without the addon: the same bytes on the wire', {skip}, () => {
  after(() => useNativeCrypto(true))

  for (const to of [[bob], [bob, carol, dave]]) {
    it(`each opens the other's envelopes to ${to.length} recipient(s), seal and sealPieces, and refuses the same tampering with the same code`, async () => {
      for (const sealNative of [true, false]) {
        // the first envelope of each key is sealed before the mode is switched back: keys are made lazily
        const s = made(sealNative, () => {
          const x = new EnvelopeSealer({grantEvery: 1000, recipients: to.map((t) => ({encPublicKey: t.enc.publicKey, name: t.name})), sender: {name: 'alice', signPrivateKey: alice.sig.privateKey}})
          x.seal(Buffer.from('first: carries the grant'))
          return x
        })
        for (const openNative of [true, false]) {
          const openers = to.map((t) => new EnvelopeOpener({identity: {encPrivateKey: t.enc.privateKey, name: t.name}, resolveSender}))
          const first = made(sealNative, () => {
            s.rotate()
            return s.seal(Buffer.from('first of a new key'), {headers: {a: 'b'}})
          })
          for (const [i, o] of openers.entries()) {
            const m = await opened(openNative, () => o.open(first.envelope))
            assert.equal(m.payload.toString(), 'first of a new key', `recipient ${i}`)
          }
          for (const size of [0, 256, 65_536 + 1]) {
            const payload = randomBytes(size)
            const envs = [s.seal(payload).envelope, Buffer.concat(s.sealPieces(payload).pieces)]
            for (const env of envs) {
              for (const o of openers) assert.ok((await o.open(env)).payload.equals(payload))
              const p = parseEnvelope2(env)
              const ctAt = env.length - 16 - size
              const headerAt = env.indexOf(p.headerBytes)
              // ciphertext, tag, and a header byte (the message id: part of the AAD)
              for (const at of [...(size > 0 ? [ctAt, ctAt + size - 1] : []), env.length - 1, env.length - 16, headerAt + p.headerBytes.length - 8]) {
                const bad = Buffer.from(env)
                bad[at] ^= 0x01
                for (const o of openers) await rejects(o.open(bad), 'E_ENVELOPE_TAG')
              }
              if (to.length > 1) {
                // another recipient's MAC: in the AAD, so the tag fails for everyone
                const bad = Buffer.from(env)
                bad[env.length - 16 - size - p.macs.length + 16] ^= 0x01
                for (const o of openers) await rejects(o.open(bad), 'E_ENVELOPE_TAG')
              }
            }
          }
        }
      }
    })
  }

  it('sealPieces into a used buffer (a confirmed message\'s) writes only the envelope, which opens with and without the addon; a short one is not used', async () => {
    for (const to of [[bob], [bob, carol, dave]]) {
      const s = new EnvelopeSealer({recipients: to.map((t) => ({encPublicKey: t.enc.publicKey, name: t.name})), sender: {name: 'alice', signPrivateKey: alice.sig.privateKey}})
      const payload = randomBytes(65_536)
      const first = s.sealPieces(payload)
      assert.ok(first.buffer && first.pieces.every((p) => p.buffer === first.buffer!.buffer), 'the pieces are views of one buffer')
      const used = Buffer.alloc(first.length + 100, 0x5a)
      const again = s.sealPieces(payload, {headers: {k: 'v'}, into: used})
      assert.equal(again.buffer, used)
      assert.ok(again.pieces.every((p) => p.buffer === used.buffer))
      const env = Buffer.concat(again.pieces)
      assert.ok(used.subarray(0, env.length).equals(env))
      assert.equal(env.length, again.length)
      assert.ok(used.subarray(env.length).equals(Buffer.alloc(used.length - env.length, 0x5a)), 'nothing after the envelope is written')
      for (const native of [true, false]) {
        const o = new EnvelopeOpener({identity: {encPrivateKey: bob.enc.privateKey, name: bob.name}, resolveSender})
        const m = await opened(native, () => o.open(env))
        assert.ok(m.payload.equals(payload))
        assert.deepEqual(m.headers, {k: 'v'})
      }
      const short = Buffer.alloc(100)
      const third = s.sealPieces(payload, {into: short})
      assert.notEqual(third.buffer, short)
      assert.ok(short.equals(Buffer.alloc(100)), 'a buffer too short is left alone')
    }
  })

  it('opens an envelope in place (as mq recv does a delivery) to the same message as from a copy, 1 and 3 recipients, with the addon on and off', async () => {
    for (const to of [[bob], [bob, carol, dave]]) {
      const s = new EnvelopeSealer({recipients: to.map((t) => ({encPublicKey: t.enc.publicKey, name: t.name})), sender: {name: 'alice', signPrivateKey: alice.sig.privateKey}})
      for (const native of [true, false]) {
        const openers = to.map((t) => new EnvelopeOpener({identity: {encPrivateKey: t.enc.privateKey, name: t.name}, resolveSender}))
        for (const size of [0, 256, 65_536]) {
          const payload = randomBytes(size)
          for (const env of [s.seal(payload, {headers: {k: 'v'}}).envelope, Buffer.concat(s.sealPieces(payload, {headers: {k: 'v'}}).pieces)]) {
            for (const o of openers) {
              const want = await opened(native, () => o.open(Buffer.from(env)))
              const body = Buffer.from(env)
              const got = await opened(native, () => o.open(body, {inPlace: true}))
              assert.ok(got.payload.equals(payload), `${to.length} recipient(s), ${size} B, addon ${native}`)
              assert.deepEqual({...got, payload: undefined}, {...want, payload: undefined})
              // with the addon the payload is a view of the body; without it the body is left as it was
              if (native && size > 0) assert.equal(got.payload.buffer, body.buffer)
              if (!native) assert.ok(body.equals(env))
            }
          }
        }
      }
    }
  })

  it('refuses every single-byte change of an envelope (inline grant and not, 1 and 3 recipients) with the same code with the addon on and off, opened in place or not', async () => {
    const codeOf = async (o: EnvelopeOpener, native: boolean, env: Buffer, inPlace = false): Promise<string> => {
      try {
        await opened(native, () => o.open(env, {inPlace}))
        return 'opened'
      } catch (error) {
        return error instanceof MqError ? error.code : `not an MqError: ${(error as Error & {code?: string}).code} ${(error as Error).message}`
      }
    }
    for (const to of [[bob], [bob, carol, dave]]) {
      const s = new EnvelopeSealer({grantEvery: 1000, recipients: to.map((t) => ({encPublicKey: t.enc.publicKey, name: t.name})), sender: {name: 'alice', signPrivateKey: alice.sig.privateKey}})
      const inline = s.seal(Buffer.from('the first carries the grant'), {headers: {k: 'v'}}).envelope
      const short = s.seal(randomBytes(40)).envelope
      const empty = s.seal(Buffer.alloc(0)).envelope
      // the last recipient: with three, its MAC is not the first
      const me = to.at(-1)!
      const openers = new Map([true, false].map((native) => [native, new EnvelopeOpener({identity: {encPrivateKey: me.enc.privateKey, name: me.name}, resolveSender})]))
      for (const [native, o] of openers) assert.equal(await codeOf(o, native, inline), 'opened')
      for (const env of [inline, short, empty]) {
        for (let at = 0; at < env.length; at++) {
          for (const flip of [0x01, 0x80]) {
            const bad = Buffer.from(env)
            bad[at] ^= flip
            const on = await codeOf(openers.get(true)!, true, bad)
            const off = await codeOf(openers.get(false)!, false, bad)
            assert.equal(on, off, `${to.length} recipient(s), byte ${at} of ${env.length} ^ ${flip}`)
            assert.equal(await codeOf(openers.get(true)!, true, Buffer.from(bad), true), on, `in place: ${to.length} recipient(s), byte ${at} of ${env.length} ^ ${flip}`)
            assert.notEqual(on, 'opened', `${to.length} recipient(s), byte ${at} of ${env.length} ^ ${flip}`)
            assert.match(on, /^E_/, `byte ${at}`)
          }
        }
        // the genuine envelope still opens in both after all that
        for (const [native, o] of openers) assert.equal(await codeOf(o, native, env), 'opened')
      }
    }
  })

  it('a receiver that evicts keys from its cache still opens every sender, with and without the addon', async () => {
    for (const native of [true, false]) {
      const o = new EnvelopeOpener({cacheSize: 2, identity: {encPrivateKey: bob.enc.privateKey, name: 'bob'}, resolveSender})
      const sealers = [0, 1, 2].map(() => new EnvelopeSealer({recipients: [{encPublicKey: bob.enc.publicKey, name: 'bob'}, {encPublicKey: carol.enc.publicKey, name: 'carol'}], sender: {name: 'alice', signPrivateKey: alice.sig.privateKey}}))
      // 0, 1, 2 evicts 0 (not the previous message's key), then 0 again, 1 (cached or not), 2, ...
      for (const i of [0, 1, 2, 0, 1, 2, 2, 0, 0, 1]) {
        const payload = randomBytes(100)
        assert.ok((await opened(native, () => o.open(sealers[i].seal(payload).envelope))).payload.equals(payload))
      }
      assert.ok(o.unwraps > 3)
    }
  })

  it('the envelope suite passes with the addon switched off (MQ_NATIVE_CRYPTO=0)', () => {
    // a runner started inside a test file's process must not think it is one (NODE_TEST_CONTEXT): it would run nothing
    const env: NodeJS.ProcessEnv = {...process.env, MQ_NATIVE_CRYPTO: '0'}
    delete env.NODE_TEST_CONTEXT
    const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', ENVELOPE_SUITE], {encoding: 'utf8', env, timeout: 120_000})
    const out = `${r.stdout}\n${r.stderr}`
    assert.equal(r.status, 0, out.slice(-3000))
    assert.match(out, /^# fail 0$/m)
    assert.ok(Number(/^# pass (\d+)$/m.exec(out)?.[1]) >= 50, out.slice(-3000))
  })
})

describe('without the addon', () => {
  it('useNativeCrypto(false) makes sealers use node:crypto, whose envelopes open', async () => {
    const was = nativeCrypto() !== undefined
    try {
      assert.equal(useNativeCrypto(false), false)
      assert.equal(nativeCrypto(), undefined)
      const s = new EnvelopeSealer({recipients: [{encPublicKey: bob.enc.publicKey, name: 'bob'}], sender: {name: 'alice', signPrivateKey: alice.sig.privateKey}})
      const o = new EnvelopeOpener({identity: {encPrivateKey: bob.enc.privateKey, name: 'bob'}, resolveSender})
      assert.equal((await o.open(s.seal(Buffer.from('plain node:crypto')).envelope)).payload.toString(), 'plain node:crypto')
    } finally {
      // back to what it was (MQ_NATIVE_CRYPTO=0, or no addon built: off)
      assert.equal(useNativeCrypto(was), was)
    }
  })
})

describe('packaging', () => {
  it('a packed mq carries the addon sources and builds them at install (without them it would fall back to node:crypto)', () => {
    const root = fileURLToPath(new URL('../../../../', import.meta.url))
    const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {cwd: root, encoding: 'utf8'})
    assert.equal(r.status, 0, r.stderr)
    const files = (JSON.parse(r.stdout) as {files: {path: string}[]}[])[0].files.map((f) => f.path)
    for (const f of ['native/mqcrypto.c', 'native/binding.gyp', 'scripts/build-native.js', 'dist/src/lib/util/native-crypto.js']) assert.ok(files.includes(f), `${f} is in the package`)
    assert.deepEqual(files.filter((f) => f.startsWith('native/build/')), [], 'no addon built on this machine is shipped')
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {scripts: Record<string, string>}
    assert.equal(pkg.scripts.install, 'node scripts/build-native.js')
  })
})
