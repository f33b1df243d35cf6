import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {describe, test} from 'node:test'

import {
  ContentDecryptor,
  ContentEncryptor,
  readCounter,
  decrypt,
  encrypt,
  generateIdentityKeys,
  newSymKey,
  parsePublicKey,
  sealedSize,
  unwrapKey,
  wrapKey,
} from '../../../src/lib/relay/crypto.js'

const NO_BINDING = {recipient: Buffer.alloc(16), sender: Buffer.alloc(16), type: 3}

describe('relay crypto', () => {
  test('MessageU keys are 160-byte RSA-1024 SPKIs (e = 17) and wrap with OAEP-SHA-1', () => {
    const {privateKey, publicKeyDer} = generateIdentityKeys('messageu')
    assert.equal(publicKeyDer.length, 160)
    const pub = parsePublicKey(Buffer.concat([publicKeyDer]))
    assert.equal(pub.asymmetricKeyDetails?.modulusLength, 1024)
    assert.equal(pub.asymmetricKeyDetails?.publicExponent, 17n)
    const k = newSymKey('messageu')
    assert.equal(k.length, 16)
    const w = wrapKey('messageu', pub, k)
    assert.equal(w.length, 128)
    assert.deepEqual(unwrapKey('messageu', privateKey, w), k)
  })

  test('AES-128-CBC with a zero IV matches the AES known answer (MessageU compat)', () => {
    // AES-128(key 0, block 0) = 66e94bd4ef8a2c3b884cfa59ca342b2e (FIPS-197 / NIST KAT)
    const ct = encrypt('messageu', Buffer.alloc(16), NO_BINDING, 0n, Buffer.alloc(16))
    assert.equal(ct.length, 32)
    assert.equal(ct.subarray(0, 16).toString('hex'), '66e94bd4ef8a2c3b884cfa59ca342b2e')
    assert.deepEqual(decrypt('messageu', Buffer.alloc(16), NO_BINDING, ct), Buffer.alloc(16))
  })

  test('strong suite: RSA-2048 SPKI, OAEP-SHA-256 wrap, AES-256-GCM with fresh nonces and bound AAD', () => {
    const {privateKey, publicKeyDer} = generateIdentityKeys('strong')
    assert.equal(parsePublicKey(publicKeyDer).asymmetricKeyDetails?.modulusLength, 2048)
    const k = newSymKey('strong')
    assert.equal(k.length, 32)
    assert.deepEqual(unwrapKey('strong', privateKey, wrapKey('strong', parsePublicKey(publicKeyDer), k)), k)
    assert.throws(() => unwrapKey('messageu', privateKey, wrapKey('strong', parsePublicKey(publicKeyDer), k)))
    const a = randomBytes(16)
    const b = randomBytes(16)
    const binding = {recipient: b, sender: a, type: 3}
    const c1 = encrypt('strong', k, binding, 7n, Buffer.from('hello'))
    const c2 = encrypt('strong', k, binding, 7n, Buffer.from('hello'))
    assert.notDeepEqual(c1, c2)
    assert.equal(c1.length, sealedSize('strong', 5))
    assert.equal(readCounter(c1), 7n)
    assert.equal(decrypt('strong', k, binding, c1).toString(), 'hello')
    assert.throws(() => decrypt('strong', k, {recipient: a, sender: b, type: 3}, c1))
    assert.throws(() => decrypt('strong', k, {...binding, type: 4}, c1))
    const bad = Buffer.from(c1)
    bad[22] ^= 1
    assert.throws(() => decrypt('strong', k, binding, bad))
    // the counter is authenticated: a relay that renumbers a stored message breaks its tag
    const renumbered = Buffer.from(c1)
    renumbered.writeBigUInt64LE(8n, 0)
    assert.throws(() => decrypt('strong', k, binding, renumbered), /authenticate/)
  })

  test('streaming open of a sealed file in odd-sized chunks', () => {
    for (const suite of ['strong', 'messageu'] as const) {
      const k = newSymKey(suite)
      const binding = {recipient: randomBytes(16), sender: randomBytes(16), type: 4}
      const plain = randomBytes(100_003)
      const enc = new ContentEncryptor(suite, k, binding, 42n)
      const sealed = Buffer.concat([enc.start(), enc.update(plain.subarray(0, 777)), enc.update(plain.subarray(777)), enc.final()])
      assert.equal(sealed.length, sealedSize(suite, plain.length))
      const dec = new ContentDecryptor(suite, k, binding, sealed.length)
      const out: Buffer[] = []
      for (let i = 0; i < sealed.length; i += 5) out.push(dec.update(sealed.subarray(i, i + 5)))
      out.push(dec.final())
      assert.deepEqual(Buffer.concat(out), plain, suite)
    }
  })
})
