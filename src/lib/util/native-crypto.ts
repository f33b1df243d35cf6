/**
 * The optional native envelope crypto (native/mqcrypto.c, built by `npm run build`): AES-256-GCM with
 * the key set up once per data key, and the per-recipient HMACs from pads absorbed once per key. The
 * envelope uses it when it loads and passes a known-answer check against node:crypto, and node:crypto
 * otherwise; the bytes on the wire are the same either way (docs/envelope.md, "Native AES-GCM").
 *
 * MQ_NATIVE_CRYPTO=0 turns it off (for tests, and as an escape hatch); useNativeCrypto() does the same
 * inside one process, for tests that compare both paths.
 */
import {createCipheriv, createHash, createHmac} from 'node:crypto'
import {existsSync} from 'node:fs'
import {constants} from 'node:os'
import {fileURLToPath} from 'node:url'

/** An opaque handle to a keyed OpenSSL context (freed, and its key cleansed, by dispose or the GC). */
export type NativeHandle = {readonly __native: unique symbol}

export interface NativeCrypto {
  /** a context keyed once with a 32-byte AES key, for sealing (decrypt false) or opening */
  gcmKey(key: Uint8Array, decrypt: boolean): NativeHandle
  /** ciphertext of `plaintext` to out[off..], then its 16-byte tag; nonce 12 bytes */
  gcmSeal(k: NativeHandle, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, out: Uint8Array, off: number): void
  /**
   * gcmSeal of head || body without joining them (the store's rows: a short head, a big body, possibly in
   * shared memory). An addon built before it is not loaded.
   */
  gcmSeal2(k: NativeHandle, nonce: Uint8Array, aad: Uint8Array, head: Uint8Array, body: Uint8Array, out: Uint8Array, off: number): void
  /**
   * plaintext to out (as long as the ciphertext; out may be the ciphertext itself when openInPlace); false
   * when the tag does not verify (out is then zeroed)
   */
  gcmOpen(k: NativeHandle, nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array, out: Uint8Array): boolean
  gcmDispose(k: NativeHandle): void
  /** MAC keys of 32 bytes one after the other */
  macKeys(keys: Uint8Array): NativeHandle
  /** for each key: HMAC-SHA256(key, head || SHA-256(payload)) truncated to 16 bytes, at out[off + 16 i] */
  macs(k: NativeHandle, head: Uint8Array, payload: Uint8Array, out: Uint8Array, off: number): void
  macDispose(k: NativeHandle): void
  /** gcmOpen decrypts over its ciphertext (out === ciphertext): set at load by the known-answer check (older builds refuse it) */
  openInPlace?: boolean
}

/** where `npm run build` puts the addon: native/build/Release, from dist/src/lib/crypto */
const ADDON = fileURLToPath(new URL('../../../../native/build/Release/mqcrypto.node', import.meta.url))

let loaded: NativeCrypto | undefined
let tried = false
let enabled = !['0', 'false', 'off', 'no'].includes((process.env.MQ_NATIVE_CRYPTO ?? '').toLowerCase())

/** The addon when it is built, loads, agrees with node:crypto and is not switched off; else undefined. */
export function nativeCrypto(): NativeCrypto | undefined {
  if (!enabled) return undefined
  if (!tried) {
    tried = true
    loaded = load()
  }
  return loaded
}

/** Switches the addon on or off for sealers and openers made after the call (tests); returns whether it is in use. */
export function useNativeCrypto(on: boolean): boolean {
  enabled = on
  return nativeCrypto() !== undefined
}

function load(): NativeCrypto | undefined {
  try {
    if (!existsSync(ADDON)) return undefined
    // RTLD_NOW (the build also links with -z now): a symbol this Node lacks fails here, not at the first call
    const m = {exports: {}} as {exports: NativeCrypto}
    process.dlopen(m, ADDON, constants.dlopen.RTLD_NOW)
    const n = m.exports
    for (const f of ['gcmKey', 'gcmSeal', 'gcmSeal2', 'gcmOpen', 'gcmDispose', 'macKeys', 'macs', 'macDispose'] as const) if (typeof n[f] !== 'function') return undefined
    return knownAnswer(n) ? n : undefined
  } catch {
    // not built for this Node (ABI), missing OpenSSL symbols, ...: node:crypto does the same work
    return undefined
  }
}

/** The addon must make node:crypto's bytes, open them, and refuse a changed tag, or it is not used. */
function knownAnswer(n: NativeCrypto): boolean {
  const key = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex')
  const nonce = Buffer.from('a0a1a2a3a4a5a6a7a8a9aaab', 'hex')
  const aad = Buffer.from('mq native known-answer aad')
  const pt = Buffer.from('mq native known-answer plaintext, longer than one AES block')
  const c = createCipheriv('aes-256-gcm', key, nonce, {authTagLength: 16})
  c.setAAD(aad)
  const want = Buffer.concat([c.update(pt), c.final(), c.getAuthTag()])
  const seal = n.gcmKey(key, false)
  const open = n.gcmKey(key, true)
  try {
    const got = Buffer.alloc(pt.length + 16)
    n.gcmSeal(seal, nonce, aad, pt, got, 0)
    if (!got.equals(want)) return false
    // the same bytes from the plaintext in two pieces, cut inside an AES block
    const two = Buffer.alloc(pt.length + 16)
    n.gcmSeal2(seal, nonce, aad, pt.subarray(0, 7), pt.subarray(7), two, 0)
    if (!two.equals(want)) return false
    const back = Buffer.alloc(pt.length)
    if (!n.gcmOpen(open, nonce, aad, want.subarray(0, pt.length), want.subarray(pt.length), back) || !back.equals(pt)) return false
    const bad = Buffer.from(want)
    bad[bad.length - 1] ^= 1
    if (n.gcmOpen(open, nonce, aad, bad.subarray(0, pt.length), bad.subarray(pt.length), back)) return false
    const ip = Buffer.from(want)
    const ct = ip.subarray(0, pt.length)
    try {
      n.openInPlace = n.gcmOpen(open, nonce, aad, ct, ip.subarray(pt.length), ct) && ct.equals(pt)
    } catch {
      // an addon built before in-place opening refuses the overlap: it opens into fresh buffers
      n.openInPlace = false
    }
  } finally {
    n.gcmDispose(seal)
    n.gcmDispose(open)
  }
  const macKeys = Buffer.concat([key, nonce, nonce, key.subarray(0, 8)])
  const m = n.macKeys(macKeys)
  try {
    const got = Buffer.alloc(32)
    n.macs(m, aad, pt, got, 0)
    const digest = createHash('sha256').update(pt).digest()
    for (let i = 0; i < 2; i++) {
      const mac = createHmac('sha256', macKeys.subarray(i * 32, i * 32 + 32)).update(aad).update(digest).digest().subarray(0, 16)
      if (!mac.equals(got.subarray(i * 16, i * 16 + 16))) return false
    }
  } finally {
    n.macDispose(m)
  }
  return true
}
