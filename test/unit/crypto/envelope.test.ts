import assert from 'node:assert/strict'
import {type KeyObject, generateKeyPairSync, randomBytes} from 'node:crypto'
import {describe, it} from 'node:test'

import {EnvelopeOpener, EnvelopeSealer, spkiSha256, parseEnvelope} from '../../../src/lib/crypto/envelope.js'
import {MqError} from '../../../src/lib/errors.js'

interface TestIdentity {
  name: string
  enc: {publicKey: KeyObject; privateKey: KeyObject}
  sig: {publicKey: KeyObject; privateKey: KeyObject}
}

const ident = (name: string): TestIdentity => ({
  enc: generateKeyPairSync('rsa', {modulusLength: 2048}),
  name,
  sig: generateKeyPairSync('rsa', {modulusLength: 2048}),
})

const alice = ident('alice')
const bob = ident('bob')
const carol = ident('carol')
const dave = ident('dave')
const directory = new Map([alice, bob, carol, dave].map((i) => [i.name, i]))

/** what recv does with the PKI: the certified signing key of that name */
const resolveSender = async (name: string): Promise<KeyObject> => {
  const i = directory.get(name)
  if (!i) throw new Error(`unknown ${name}`)
  return i.sig.publicKey
}

const opener = (i: TestIdentity): EnvelopeOpener => new EnvelopeOpener({identity: {encPrivateKey: i.enc.privateKey, name: i.name}, resolveSender})
const sealer = (from: TestIdentity, to: TestIdentity[], opts: {maxMessages?: number; maxAgeMs?: number; now?: () => number} = {}): EnvelopeSealer =>
  new EnvelopeSealer({...opts, recipients: to.map((t) => ({encPublicKey: t.enc.publicKey, name: t.name})), sender: {name: from.name, signPrivateKey: from.sig.privateKey}})

const rejects = async (p: Promise<unknown>, code?: string): Promise<MqError> => {
  try {
    await p
  } catch (error) {
    assert.ok(error instanceof MqError, `expected MqError, got ${String(error)}`)
    if (code) assert.equal(error.code, code)
    return error
  }
  assert.fail('expected the envelope to be rejected')
}

describe('native envelope', () => {
  it('carries 1,000 messages alice -> bob byte-identical and verified, with one RSA unwrap', async () => {
    const s = sealer(alice, [bob])
    const o = opener(bob)
    for (let i = 0; i < 1000; i++) {
      const payload = randomBytes(i % 300)
      const {envelope, messageId} = s.seal(payload, {headers: {n: String(i)}})
      const m = await o.open(envelope)
      assert.ok(m.payload.equals(payload))
      assert.equal(m.messageId, messageId)
      assert.equal(m.sender, 'alice')
      assert.equal(m.verified, true)
      assert.deepEqual(m.recipients, ['bob'])
      assert.deepEqual(m.headers, {n: String(i)})
      assert.equal(m.seq, i)
    }
    assert.equal(s.keysCreated, 1)
    assert.equal(o.unwraps, 1)
  })

  it('a message to two recipients is readable by both and by nobody else', async () => {
    const {envelope} = sealer(alice, [bob, carol]).seal(Buffer.from('for bob and carol'))
    assert.equal((await opener(bob).open(envelope)).payload.toString(), 'for bob and carol')
    assert.equal((await opener(carol).open(envelope)).payload.toString(), 'for bob and carol')
    await rejects(opener(dave).open(envelope), 'E_ENVELOPE_NOT_FOR_ME')
    // even with the name right, a different key cannot read it
    await rejects(new EnvelopeOpener({identity: {encPrivateKey: dave.enc.privateKey, name: 'bob'}, resolveSender}).open(envelope), 'E_ENVELOPE_NOT_FOR_ME')
  })

  it('rejects the envelope when any single byte is flipped', async () => {
    const {envelope} = sealer(alice, [bob, carol]).seal(Buffer.from('integrity matters'), {headers: {k: 'v'}})
    const o = opener(bob)
    await o.open(envelope) // warm the key cache: a flip must be caught even when the grant is cached
    for (let i = 0; i < envelope.length; i++) {
      const bad = Buffer.from(envelope)
      bad[i] ^= 0x01
      await rejects(o.open(bad))
    }
    // truncation and extension too
    await rejects(o.open(envelope.subarray(0, envelope.length - 1)))
    await rejects(o.open(Buffer.concat([envelope, Buffer.from([0])])))
  })

  it('rejects a message signed by someone else or claiming another sender', async () => {
    // mallory signs with carol's key but calls herself alice
    const forged = new EnvelopeSealer({recipients: [{encPublicKey: bob.enc.publicKey, name: 'bob'}], sender: {name: 'alice', signPrivateKey: carol.sig.privateKey}})
    await rejects(opener(bob).open(forged.seal(Buffer.from('x')).envelope), 'E_SENDER_KEY_MISMATCH')
    // ... or claims alice's fingerprint while signing with her own key
    const forged2 = new EnvelopeSealer({recipients: [{encPublicKey: bob.enc.publicKey, name: 'bob'}], sender: {name: 'alice', signFingerprint: spkiSha256(alice.sig.publicKey), signPrivateKey: carol.sig.privateKey}})
    await rejects(opener(bob).open(forged2.seal(Buffer.from('x')).envelope), 'E_ENVELOPE_SIGNATURE')
  })

  it('a recipient cannot forge a message to a co-recipient with the shared data key', async () => {
    const s = sealer(alice, [bob, carol])
    const {envelope} = s.seal(Buffer.from('original'))
    const parts = parseEnvelope(envelope)
    // bob knows the data key: he re-encrypts another payload under the same grant, keeping the MACs
    const {createCipheriv, createHash} = await import('node:crypto')
    const bobKey = (opener(bob) as unknown as {unlock: (p: unknown, h: Buffer) => Promise<{dataKey: Buffer}>})
    const grantHash = createHash('sha256')
      .update(Buffer.from([0, 0, (parts.grantBytes.length >> 8) & 0xff, parts.grantBytes.length & 0xff]))
      .update(parts.grantBytes)
      .update(parts.signature)
      .digest()
    const {dataKey} = await bobKey.unlock(parts, grantHash)
    const header = JSON.parse(parts.headerBytes.toString())
    const nonce = Buffer.from(header.n, 'base64')
    const hl = Buffer.alloc(4)
    hl.writeUInt32BE(parts.headerBytes.length)
    const c = createCipheriv('aes-256-gcm', dataKey, nonce)
    c.setAAD(Buffer.concat([Buffer.from('MQE1'), grantHash, hl, parts.headerBytes, parts.macs]))
    const ct = Buffer.concat([c.update(Buffer.from('forged!!')), c.final()])
    const prefix = envelope.subarray(0, envelope.length - parts.ciphertext.length - 16)
    const forged = Buffer.concat([prefix, ct, c.getAuthTag()])
    await rejects(opener(carol).open(forged), 'E_ENVELOPE_MAC')
  })

  it('rotates the data key by count and by age, and the receiver follows', async () => {
    let now = 1_700_000_000_000
    const s = sealer(alice, [bob], {maxAgeMs: 60_000, maxMessages: 10, now: () => now})
    const o = opener(bob)
    const kids = new Set<string>()
    for (let i = 0; i < 25; i++) {
      const sealed = s.seal(Buffer.from(`m${i}`))
      kids.add(sealed.keyId)
      assert.equal((await o.open(sealed.envelope)).payload.toString(), `m${i}`)
    }
    assert.equal(kids.size, 3)
    now += 61_000
    const later = s.seal(Buffer.from('later'))
    assert.ok(!kids.has(later.keyId))
    assert.equal(s.keysCreated, 4)
    await o.open(later.envelope)
    assert.equal(o.unwraps, 4)
  })

  it('checks the sender of a cached grant again after recheckMs, so a revocation takes effect', async () => {
    let now = 1_700_000_000_000
    let revoked = false
    const o = new EnvelopeOpener({
      identity: {encPrivateKey: bob.enc.privateKey, name: 'bob'},
      now: () => now,
      recheckMs: 60_000,
      resolveSender: async (name) => {
        if (revoked) throw new MqError('E_IDENTITY_REVOKED', `${name} revoked`)
        return resolveSender(name)
      },
    })
    const s = sealer(alice, [bob], {now: () => now})
    await o.open(s.seal(Buffer.from('1')).envelope)
    revoked = true
    now += 30_000
    await o.open(s.seal(Buffer.from('2')).envelope) // still within the recheck interval
    now += 31_000
    await rejects(o.open(s.seal(Buffer.from('3')).envelope), 'E_IDENTITY_REVOKED')
    assert.equal(o.unwraps, 1)
  })

  it('rejects garbage without throwing anything but MqError', async () => {
    const o = opener(bob)
    for (const junk of [Buffer.alloc(0), Buffer.from('MQE1'), Buffer.from('MQE1\u00ff\u00ff\u00ff\u00ff'), randomBytes(100), Buffer.concat([Buffer.from('MQE1'), randomBytes(300)])]) {
      await rejects(o.open(junk))
    }
  })
})
