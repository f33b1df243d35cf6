import assert from 'node:assert/strict'
import {type KeyObject, constants, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign} from 'node:crypto'
import {readFileSync} from 'node:fs'
import {describe, it} from 'node:test'

import {EnvelopeOpener, EnvelopeSealer, type GrantStore, encodeGrant3, parseEnvelope2, parseGrant3, spkiSha256} from '../../../src/lib/crypto/envelope.js'
import {isDefinitiveRejection} from '../../../src/lib/crypto/recv.js'
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
const sealer = (from: TestIdentity, to: TestIdentity[], opts: {maxMessages?: number; maxAgeMs?: number; grantEvery?: number; now?: () => number} = {}): EnvelopeSealer =>
  new EnvelopeSealer({grantEvery: 1000, ...opts, recipients: to.map((t) => ({encPublicKey: t.enc.publicKey, name: t.name})), sender: {name: from.name, signPrivateKey: from.sig.privateKey}})

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
  it('sealPieces gives the envelope seal() would, as prefix, ciphertext pieces and tag, that every recipient opens', async () => {
    const s = sealer(alice, [bob, carol])
    const ob = opener(bob)
    const oc = opener(carol)
    const first = s.seal(Buffer.from('first: carries the grant')).envelope
    await ob.open(first)
    await oc.open(first)
    for (const size of [0, 100, 16 * 1024, 64 * 1024, 64 * 1024 + 1, 200_000]) {
      const payload = randomBytes(size)
      const p = s.sealPieces(payload, {headers: {size: String(size)}})
      const joined = Buffer.concat(p.pieces)
      assert.equal(joined.length, p.length)
      // the same framing as seal(): same length, the first piece is everything before the ciphertext, the last the tag
      const whole = s.seal(payload, {headers: {size: String(size)}}).envelope
      assert.equal(joined.length, whole.length)
      const parts = parseEnvelope2(joined)
      assert.equal(parts.ciphertext.length, size)
      assert.equal(p.pieces[0].length, joined.length - size - 16)
      assert.ok(p.pieces.at(-1)!.equals(parts.tag))
      assert.equal(p.pieces.length, 2 + Math.ceil(size / (64 * 1024)))
      for (const o of [ob, oc]) {
        const m = await o.open(joined)
        assert.ok(m.payload.equals(payload))
        assert.equal(m.messageId, p.messageId)
        assert.equal(m.seq, p.seq)
        assert.deepEqual(m.headers, {size: String(size)})
      }
      // a flipped ciphertext byte fails the tag as with seal()
      if (size > 0) {
        joined[p.pieces[0].length] ^= 1
        await rejects(ob.open(joined), 'E_ENVELOPE_TAG')
      }
    }
  })

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

  it('envelopes of two streams, of every header length, open as sealed when interleaved, in place too, and keep their bytes after later seals', async () => {
    // sealing and opening build the AAD and MAC input in buffers reused from message to message, and the
    // receiver recognises a repeated inline grant by comparing it with the last one: none of that may leak
    // from one message, or one stream, into the next
    const streams = [sealer(alice, [bob], {grantEvery: 1}), sealer(carol, [bob, dave], {grantEvery: 1})]
    const o = opener(bob)
    const sealed: {envelope: Buffer; copy: Buffer; payload: Buffer; messageId: string; contentType: string; headers: Record<string, string>; from: string}[] = []
    for (let i = 0; i < 60; i++) {
      const payload = randomBytes(i * 7)
      // UTF-8 and ASCII ids of several lengths, the default and other content types, with and without user headers
      const messageId = i % 3 === 0 ? `nachricht-${'ü'.repeat(i % 7)}-${i}` : `m-${'x'.repeat(i)}`
      const contentType = i % 4 === 0 ? 'application/octet-stream' : `text/plain; v=${i}`
      const headers: Record<string, string> = i % 2 === 0 ? {} : {k: 'v'.repeat(i)}
      const {envelope} = streams[i % 2].seal(payload, {contentType, headers, messageId})
      sealed.push({contentType, copy: Buffer.from(envelope), envelope, from: i % 2 === 0 ? 'alice' : 'carol', headers, messageId, payload})
    }
    for (const [i, x] of sealed.entries()) {
      assert.ok(x.envelope.equals(x.copy), `envelope ${i} changed after later seals`)
      const m = await o.open(i % 3 === 0 ? x.envelope : Buffer.from(x.envelope), {inPlace: i % 3 === 0})
      assert.ok(m.payload.equals(x.payload))
      assert.equal(m.messageId, x.messageId)
      assert.equal(m.contentType, x.contentType)
      assert.deepEqual(m.headers, x.headers)
      assert.equal(m.sender, x.from)
    }
    // a header whose message id is not UTF-8 is refused as malformed (the ASCII fast path does not skip the check)
    const {envelope} = streams[0].seal(Buffer.from('x'), {messageId: 'ä-not-utf8'})
    const at = envelope.indexOf(Buffer.from('ä'))
    envelope[at] = 0xff
    await rejects(o.open(envelope), 'E_ENVELOPE_MALFORMED')
    assert.equal(o.unwraps, 2)
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
    const parts = parseEnvelope2(envelope)
    // bob knows the data key: he re-encrypts another payload under the same grant, keeping the MACs
    const {createCipheriv, createHash} = await import('node:crypto')
    const bobKey = opener(bob) as unknown as {unlock: (encoding: number, h: Buffer, g: unknown) => Promise<{dataKey: Buffer}>}
    const {grantBytes, signature} = parts.inline!
    const gl = Buffer.alloc(4)
    gl.writeUInt32BE(grantBytes.length)
    const grantHash = createHash('sha256').update(gl).update(grantBytes).update(signature).digest()
    const {dataKey} = await bobKey.unlock(3, grantHash, parts.inline)
    const nonce = parts.headerBytes.subarray(13, 25)
    const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff])
    const c = createCipheriv('aes-256-gcm', dataKey, nonce)
    c.setAAD(Buffer.concat([Buffer.from('MQE3'), grantHash, u16(parts.headerBytes.length), parts.headerBytes, u16(parts.macs.length), parts.macs]))
    const ct = Buffer.concat([c.update(Buffer.from('forged!!')), c.final()])
    const prefix = envelope.subarray(0, envelope.length - parts.ciphertext.length - 16)
    const forged = Buffer.concat([prefix, ct, c.getAuthTag()])
    // the forgery is well formed: only carol's MAC gives it away
    await rejects(opener(carol).open(forged), 'E_ENVELOPE_MAC')
  })

  it('writes each recipient the HMAC-SHA256 docs/envelope.md defines, as node:crypto computes it', async () => {
    const {createHash, createHmac, privateDecrypt} = await import('node:crypto')
    const to = [bob, carol, dave]
    const s = sealer(alice, to, {grantEvery: 1})
    for (const payload of [Buffer.alloc(0), randomBytes(1), randomBytes(300), randomBytes(70_000)]) {
      const parts = parseEnvelope2(s.seal(payload, {headers: {k: 'v'}}).envelope)
      const {grantBytes, signature} = parts.inline!
      const gl = Buffer.alloc(4)
      gl.writeUInt32BE(grantBytes.length)
      const gh = createHash('sha256').update(gl).update(grantBytes).update(signature).digest()
      const hl = Buffer.alloc(2)
      hl.writeUInt16BE(parts.headerBytes.length)
      const input = Buffer.concat([Buffer.from('mq-envelope-mac/3\0'), gh, hl, parts.headerBytes, createHash('sha256').update(payload).digest()])
      const grant = parseGrant3(grantBytes)
      assert.equal(parts.macs.length, 16 * to.length)
      for (const [i, r] of to.entries()) {
        const keys = privateDecrypt({key: r.enc.privateKey, oaepHash: 'sha256', padding: constants.RSA_PKCS1_OAEP_PADDING}, grant.to[i].wk)
        const want = createHmac('sha256', keys.subarray(32)).update(input).digest().subarray(0, 16)
        assert.ok(parts.macs.subarray(i * 16, (i + 1) * 16).equals(want), `MAC of ${r.name}`)
      }
    }
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

/** a receiver's grant store, as ReplayGuard keeps it in its database */
const memoryGrants = (): GrantStore & {size: () => number} => {
  const m = new Map<string, {grantBytes: Buffer; signature: Buffer}>()
  return {
    getGrant: (h) => m.get(h.toString('hex')),
    putGrant: (h, grantBytes, signature) => void m.set(h.toString('hex'), {grantBytes, signature}),
    size: () => m.size,
  }
}

describe('MQE3 envelope: binary header, the signed binary grant inline now and then, else its hash', () => {
  it('carries the grant in the first message and every grantEvery-th, the others 600 B smaller, all opening verified', async () => {
    const s = sealer(alice, [bob], {grantEvery: 100})
    const o = opener(bob)
    const sizes: number[] = []
    for (let i = 0; i < 250; i++) {
      const payload = randomBytes(256)
      const sealed = s.seal(payload, {headers: i === 3 ? {k: 'v'} : undefined})
      assert.equal(sealed.envelope.subarray(0, 4).toString(), 'MQE3')
      assert.equal(sealed.grantInline, i % 100 === 0, `message ${i}`)
      sizes.push(sealed.envelope.length)
      const m = await o.open(sealed.envelope)
      assert.ok(m.payload.equals(payload))
      assert.equal(m.messageId, sealed.messageId)
      assert.equal(m.sender, 'alice')
      assert.deepEqual(m.recipients, ['bob'])
      assert.deepEqual(m.headers, i === 3 ? {k: 'v'} : {})
      assert.equal(m.seq, i)
    }
    assert.equal(o.unwraps, 1)
    // a reference costs the grant hash instead of the grant and its signature
    assert.ok(sizes[1] - 256 <= 124, `reference overhead ${sizes[1] - 256} B`)
    assert.ok(sizes[0] - sizes[1] > 550, `inline grant adds ${sizes[0] - sizes[1]} B`)
  })

  it('by default every envelope carries its grant: a receiver that saw none of the others opens any one of them', async () => {
    const s = new EnvelopeSealer({recipients: [{encPublicKey: bob.enc.publicKey, name: 'bob'}], sender: {name: alice.name, signPrivateKey: alice.sig.privateKey}})
    const sealed = Array.from({length: 5}, (_, i) => s.seal(Buffer.from(`m${i}`)))
    assert.deepEqual(sealed.map((x) => x.grantInline), [true, true, true, true, true])
    // a fresh receiver with an empty grant store, handed only the last message
    const m = await opener(bob).open(sealed[4].envelope)
    assert.equal(m.payload.toString(), 'm4')
  })

  it('repeats the grant at least every grantIntervalMs, so a receiver joining a stream learns it', async () => {
    let now = 1_700_000_000_000
    const s = sealer(alice, [bob], {grantEvery: 1_000_000, now: () => now})
    assert.equal(s.seal(Buffer.from('0')).grantInline, true)
    now += 500
    assert.equal(s.seal(Buffer.from('1')).grantInline, false)
    now += 600
    assert.equal(s.seal(Buffer.from('2')).grantInline, true)
    assert.equal(s.seal(Buffer.from('3')).grantInline, false)
  })

  it('a reference to a grant the receiver never saw is a temporary failure, not a rejection; a stored grant opens it after a restart', async () => {
    const s = sealer(alice, [bob])
    const first = s.seal(Buffer.from('first, with the grant')).envelope
    const second = s.seal(Buffer.from('second, a reference')).envelope
    const e = await rejects(opener(bob).open(second), 'E_GRANT_UNKNOWN')
    assert.equal(e.exit, 75)
    assert.equal(isDefinitiveRejection(e), false)
    const grants = memoryGrants()
    const o1 = new EnvelopeOpener({grants, identity: {encPrivateKey: bob.enc.privateKey, name: 'bob'}, resolveSender})
    await o1.open(first)
    assert.equal(grants.size(), 1)
    // a new receiver process with the same store: no inline grant needed
    const o2 = new EnvelopeOpener({grants, identity: {encPrivateKey: bob.enc.privateKey, name: 'bob'}, resolveSender})
    assert.equal((await o2.open(second)).payload.toString(), 'second, a reference')
    // the stored grant is verified again (signature, sender key), not trusted as stored
    const o3 = new EnvelopeOpener({grants, identity: {encPrivateKey: bob.enc.privateKey, name: 'bob'}, resolveSender: async () => carol.sig.publicKey})
    await rejects(o3.open(second), 'E_SENDER_KEY_MISMATCH')
  })

  it('rejects a reference envelope when any single byte is flipped, with the grant cached', async () => {
    const s = sealer(alice, [bob, carol])
    const o = opener(bob)
    await o.open(s.seal(Buffer.from('grant')).envelope)
    const {envelope, grantInline} = s.seal(Buffer.from('integrity matters'), {headers: {k: 'v'}})
    assert.equal(grantInline, false)
    for (let i = 0; i < envelope.length; i++) {
      const bad = Buffer.from(envelope)
      bad[i] ^= 0x01
      await rejects(o.open(bad))
    }
    await rejects(o.open(envelope.subarray(0, envelope.length - 1)))
    await rejects(o.open(Buffer.concat([envelope, Buffer.from([0])])))
    assert.equal((await o.open(envelope)).payload.toString(), 'integrity matters')
  })

  it('a reference cannot be moved to another grant of the same sender, nor read by a non-recipient', async () => {
    const toBob = sealer(alice, [bob])
    const other = sealer(alice, [bob])
    const o = opener(bob)
    await o.open(toBob.seal(Buffer.from('a')).envelope)
    const otherFirst = other.seal(Buffer.from('b')).envelope
    await o.open(otherFirst)
    const ref = toBob.seal(Buffer.from('c')).envelope
    // swap in the other grant's hash (bytes 5..37): bob knows both grants, the AAD binds the right one
    const otherHash = parseEnvelope2(other.seal(Buffer.from('d')).envelope).grantHash!
    const moved = Buffer.from(ref)
    otherHash.copy(moved, 5)
    await rejects(o.open(moved), 'E_ENVELOPE_TAG')
    // dave is no recipient: the inline grant tells him so, and he never learns the reference's grant
    const toBobAndCarol = sealer(alice, [bob, carol])
    const inline = toBobAndCarol.seal(Buffer.from('x')).envelope
    const reference = toBobAndCarol.seal(Buffer.from('y')).envelope
    const d = new EnvelopeOpener({grants: memoryGrants(), identity: {encPrivateKey: dave.enc.privateKey, name: 'dave'}, resolveSender})
    await rejects(d.open(inline), 'E_ENVELOPE_NOT_FOR_ME')
    await rejects(d.open(reference), 'E_GRANT_UNKNOWN')
  })
})

describe('MQE1 envelopes written by earlier versions', () => {
  const fx = JSON.parse(readFileSync(new URL('../../../../test/unit/crypto/fixtures/mqe1.json', import.meta.url), 'utf8')) as {
    aliceSignPublic: string
    bobEncPrivate: string
    carolEncPrivate: string
    envelopes: {to: string[]; id: string; payload: string; headers: Record<string, string>; b64: string}[]
  }
  const aliceKey = createPublicKey(fx.aliceSignPublic)
  const old = (name: string, pem: string) => new EnvelopeOpener({identity: {encPrivateKey: createPrivateKey(pem), name}, resolveSender: async (n) => (n === 'alice' ? aliceKey : Promise.reject(new Error(n)))})

  it('still open, verified, for every recipient; a flipped byte is still refused', async () => {
    const bobOpener = old('bob', fx.bobEncPrivate)
    for (const e of fx.envelopes) {
      const buf = Buffer.from(e.b64, 'base64')
      assert.equal(buf.subarray(0, 4).toString(), 'MQE1')
      const m = await bobOpener.open(buf)
      assert.equal(m.payload.toString(), e.payload)
      assert.equal(m.messageId, e.id)
      assert.equal(m.sender, 'alice')
      assert.deepEqual(m.recipients, e.to)
      assert.deepEqual(m.headers, e.headers)
      const bad = Buffer.from(buf)
      bad[bad.length - 20] ^= 0x01
      await rejects(bobOpener.open(bad), 'E_ENVELOPE_TAG')
    }
    const both = fx.envelopes.find((e) => e.to.length === 2)!
    assert.equal((await old('carol', fx.carolEncPrivate).open(Buffer.from(both.b64, 'base64'))).payload.toString(), both.payload)
  })
})

/** Where each part of an inline MQE3 envelope lies (docs/envelope.md), for tampering with one field at a time. */
function layout3(env: Buffer) {
  const G = env.readUInt32BE(5)
  const grant = 9
  const sigLen = grant + G
  const sig = sigLen + 2
  const hdrLen = sig + env.readUInt16BE(sigLen)
  const hdr = hdrLen + 2
  const macLen = hdr + env.readUInt16BE(hdrLen)
  const ct = macLen + 2 + env.readUInt16BE(macLen)
  return {G, ct, grant, hdr, hdrLen, macLen, sig, sigLen}
}

/** The envelope with its grant replaced by `grant`, signed by `key` under `context` (the rest kept as it was). */
function withGrant(env: Buffer, grant: Buffer, key: KeyObject, context = 'mq-envelope-grant/3\0'): Buffer {
  const {hdrLen} = layout3(env)
  const signature = sign('sha256', Buffer.concat([Buffer.from(context), grant]), {key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST})
  const g = Buffer.alloc(4)
  g.writeUInt32BE(grant.length)
  const s = Buffer.from([signature.length >> 8, signature.length & 0xff])
  return Buffer.concat([env.subarray(0, 5), g, grant, s, signature, env.subarray(hdrLen)])
}

describe('MQE3 binary grant: the sender signs every field it claims, parsed strictly', () => {
  const s = sealer(alice, [bob, carol])
  const sealed = s.seal(Buffer.from('fields matter'), {headers: {k: 'v'}})
  const env = sealed.envelope
  const L = layout3(env)
  const g = L.grant
  // the grant's layout: magic 0, alg 4, kid 5, iat 21, exp 29, max 37, sfp 41, u16+from 73 ("alice"),
  // u16 count 80, then u16+name ("bob") 82, fp 87, u16+wk 119 (256 bytes) 121, then carol's entry 377
  const flip = (off: number) => (b: Buffer) => void (b[off] ^= 0x01)
  const cases: [string, (b: Buffer) => void, string][] = [
    ['envelope magic (MQE3 -> MQE2)', flip(3), 'E_ENVELOPE_MALFORMED'],
    ['envelope kind', flip(4), 'E_ENVELOPE_MALFORMED'],
    ['grant length', flip(8), 'E_ENVELOPE_MALFORMED'],
    ['grant magic', flip(g + 3), 'E_ENVELOPE_MALFORMED'],
    ['grant algorithm', flip(g + 4), 'E_ENVELOPE_MALFORMED'],
    ['key id', flip(g + 5), 'E_ENVELOPE_SIGNATURE'],
    ['issued at', flip(g + 28), 'E_ENVELOPE_SIGNATURE'],
    ['expires', flip(g + 36), 'E_ENVELOPE_SIGNATURE'],
    ['message limit', flip(g + 40), 'E_ENVELOPE_SIGNATURE'],
    ['sender key fingerprint', flip(g + 41), 'E_SENDER_KEY_MISMATCH'],
    ['sender name length', flip(g + 74), 'E_ENVELOPE_MALFORMED'],
    ['sender name (alice -> carol, whose key did not sign)', (b) => void b.write('carol', g + 75), 'E_SENDER_KEY_MISMATCH'],
    ['recipient count', flip(g + 81), 'E_ENVELOPE_MALFORMED'],
    ['recipient name', flip(g + 86), 'E_ENVELOPE_NOT_FOR_ME'],
    ['recipient key fingerprint', flip(g + 87), 'E_ENVELOPE_NOT_FOR_ME'],
    ['wrapped key length', flip(g + 120), 'E_ENVELOPE_MALFORMED'],
    ['wrapped key', flip(g + 130), 'E_ENVELOPE_SIGNATURE'],
    ['another recipient name', flip(g + 379), 'E_ENVELOPE_SIGNATURE'],
    ['another recipient wrapped key', flip(L.sigLen - 1), 'E_ENVELOPE_SIGNATURE'],
    ['signature length', flip(L.sigLen + 1), 'E_ENVELOPE_MALFORMED'],
    ['signature', flip(L.sig + 10), 'E_ENVELOPE_SIGNATURE'],
    ['header length', flip(L.hdrLen + 1), 'E_ENVELOPE_MALFORMED'],
    ['header version', flip(L.hdr), 'E_ENVELOPE_MALFORMED'],
    ['timestamp', flip(L.hdr + 8), 'E_ENVELOPE_TAG'],
    ['message number', flip(L.hdr + 12), 'E_ENVELOPE_TAG'],
    ['nonce', flip(L.hdr + 13), 'E_ENVELOPE_TAG'],
    ['message id', flip(L.hdr + 28), 'E_ENVELOPE_TAG'],
    ['user header value', flip(L.macLen - 3), 'E_ENVELOPE_TAG'],
    ['MAC block', flip(L.macLen + 2), 'E_ENVELOPE_TAG'],
    ['ciphertext', flip(L.ct), 'E_ENVELOPE_TAG'],
    ['GCM tag', flip(env.length - 1), 'E_ENVELOPE_TAG'],
  ]
  for (const [what, tamper, code] of cases) {
    it(`refuses a tampered ${what}: ${code}, a verdict that dead-letters it`, async () => {
      const bad = Buffer.from(env)
      tamper(bad)
      const e = await rejects(opener(bob).open(bad), code)
      assert.equal(isDefinitiveRejection(e), true)
    })
  }

  it('the untampered envelope opens, for each recipient, with its fields as sealed', async () => {
    assert.equal(parseGrant3(env.subarray(g, g + L.G)).from, 'alice')
    for (const who of [bob, carol]) {
      const m = await opener(who).open(env)
      assert.equal(m.payload.toString(), 'fields matter')
      assert.equal(m.sender, 'alice')
      assert.deepEqual(m.recipients, ['bob', 'carol'])
      assert.equal(m.keyId, sealed.keyId)
      assert.deepEqual(m.headers, {k: 'v'})
    }
  })

  it('refuses a grant the sender signed that is cut short or extended, naming what is wrong', async () => {
    const grant = env.subarray(g, g + L.G)
    const cases: [Buffer, RegExp][] = [
      [Buffer.concat([grant, Buffer.from([0])]), /Malformed envelope: 1 trailing byte\(s\) after the grant/],
      [Buffer.concat([grant, randomBytes(40)]), /Malformed envelope: 40 trailing byte\(s\) after the grant/],
      [grant.subarray(0, grant.length - 1), /Malformed envelope: truncated grant wrapped key/],
      [grant.subarray(0, 60), /Malformed envelope: truncated grant/],
      [grant.subarray(0, 77), /Malformed envelope: truncated grant sender/],
    ]
    for (const [bytes, message] of cases) {
      const e = await rejects(opener(bob).open(withGrant(env, bytes, alice.sig.privateKey)), 'E_ENVELOPE_MALFORMED')
      assert.match(e.message, message)
    }
    // well-formed and signed, but re-signed: the grant hash in the AAD changed, so the message does not open
    await rejects(opener(bob).open(withGrant(env, grant, alice.sig.privateKey)), 'E_ENVELOPE_TAG')
  })

  it('refuses signed grants that break the rules: a recipient twice, no messages allowed, expiry before issue', async () => {
    const p = parseGrant3(env.subarray(g, g + L.G))
    const fields = {
      exp: p.exp,
      from: p.from,
      iat: p.iat,
      kid: Buffer.from(p.kid, 'hex'),
      max: p.max,
      sfp: Buffer.from(p.sfp, 'hex'),
      to: p.to.map((t) => ({fp: Buffer.from(t.fp, 'hex'), name: t.name, wk: t.wk})),
    }
    const bad: [Buffer, RegExp][] = [
      [encodeGrant3({...fields, to: [fields.to[0], fields.to[0]]}), /names a recipient twice/],
      [encodeGrant3({...fields, max: 0}), /grant validity/],
      [encodeGrant3({...fields, exp: fields.iat - 1}), /grant validity/],
      [encodeGrant3({...fields, to: []}), /grant recipient count/],
    ]
    for (const [grant, message] of bad) assert.match((await rejects(opener(bob).open(withGrant(env, grant, alice.sig.privateKey)), 'E_ENVELOPE_MALFORMED')).message, message)
    // the round trip keeps every field
    assert.deepEqual(parseGrant3(encodeGrant3(fields)), p)
  })

  it('a binary grant signed under the JSON grant context is refused (the contexts keep the encodings apart)', async () => {
    const grant = env.subarray(g, g + L.G)
    await rejects(opener(bob).open(withGrant(env, grant, alice.sig.privateKey, 'mq-envelope-grant/1\0')), 'E_ENVELOPE_SIGNATURE')
  })

  it('is binary on the wire: the wrapped key is the raw RSA-OAEP block, the envelope about 740 B over the payload with one recipient, 290 B more per recipient', () => {
    const one = sealer(alice, [bob], {grantEvery: 1}).seal(Buffer.alloc(256)).envelope
    const three = sealer(alice, [bob, carol, dave], {grantEvery: 1}).seal(Buffer.alloc(256)).envelope
    const l1 = layout3(one)
    const grant = parseGrant3(one.subarray(l1.grant, l1.grant + l1.G))
    assert.equal(grant.to[0].wk.length, 256)
    assert.ok(one.subarray(l1.grant, l1.grant + l1.G).includes(grant.to[0].wk))
    // MQE2 carried 1,169 B (JSON grant with base64 and hex) with one recipient, about 2,100 B with three
    assert.ok(one.length - 256 <= 760, `one recipient: ${one.length - 256} B`)
    assert.ok(three.length - 256 <= 760 + 2 * (290 + 16) + 16, `three recipients: ${three.length - 256} B`)
  })
})

describe('MQE2 envelopes written by the previous version', () => {
  const fx = JSON.parse(readFileSync(new URL('../../../../test/unit/crypto/fixtures/mqe2.json', import.meta.url), 'utf8')) as {
    aliceSignPublic: string
    bobEncPrivate: string
    carolEncPrivate: string
    envelopes: {to: string[]; id: string; inline: boolean; payload: string; headers: Record<string, string>; b64: string}[]
  }
  const aliceKey = createPublicKey(fx.aliceSignPublic)
  const old = (name: string, pem: string, grants?: GrantStore) =>
    new EnvelopeOpener({grants, identity: {encPrivateKey: createPrivateKey(pem), name}, resolveSender: async (n) => (n === 'alice' ? aliceKey : Promise.reject(new Error(n)))})
  const buf = (id: string) => Buffer.from(fx.envelopes.find((e) => e.id === id)!.b64, 'base64')

  it('still open, verified: an inline grant, a reference to it (also from the grant store after a restart), several recipients', async () => {
    const grants = memoryGrants()
    const bobOpener = old('bob', fx.bobEncPrivate, grants)
    for (const e of fx.envelopes) {
      const b = Buffer.from(e.b64, 'base64')
      assert.equal(b.subarray(0, 4).toString(), 'MQE2')
      const m = await bobOpener.open(b)
      assert.equal(m.payload.toString(), e.payload)
      assert.equal(m.messageId, e.id)
      assert.equal(m.sender, 'alice')
      assert.deepEqual(m.recipients, e.to)
      assert.deepEqual(m.headers, e.headers)
      const bad = Buffer.from(b)
      bad[bad.length - 20] ^= 0x01
      await rejects(bobOpener.open(bad), 'E_ENVELOPE_TAG')
    }
    assert.equal((await old('bob', fx.bobEncPrivate, grants).open(buf('mqe2-ref'))).payload.toString(), 'second, a reference to the grant above')
    assert.equal((await old('carol', fx.carolEncPrivate).open(buf('mqe2-both'))).payload.toString(), 'for bob and carol')
  })

  it('relabelled as MQE3 they are refused: the JSON grant is no binary grant, also when it is already known by its hash', async () => {
    const bobOpener = old('bob', fx.bobEncPrivate)
    const relabel = (b: Buffer) => Buffer.concat([Buffer.from('MQE3'), b.subarray(4)])
    assert.match((await rejects(bobOpener.open(relabel(buf('mqe2-one'))), 'E_ENVELOPE_MALFORMED')).message, /not a binary \(MQG3\) grant/)
    await bobOpener.open(buf('mqe2-one'))
    assert.match((await rejects(bobOpener.open(relabel(buf('mqe2-ref'))), 'E_ENVELOPE_MALFORMED')).message, /not the binary grant this envelope format carries/)
  })
})

describe('MQE3 sealing refuses what no receiver would open', () => {
  it('a sender or recipient name longer than 1,024 bytes is refused before anything is sent', () => {
    const long = 'x'.repeat(1025)
    assert.throws(() => new EnvelopeSealer({recipients: [{encPublicKey: bob.enc.publicKey, name: long}], sender: {name: 'alice', signPrivateKey: alice.sig.privateKey}}).seal(Buffer.from('x')), /E_BAD_NAME|1025 bytes/)
    assert.throws(() => new EnvelopeSealer({recipients: [{encPublicKey: bob.enc.publicKey, name: 'bob'}], sender: {name: long, signPrivateKey: alice.sig.privateKey}}).seal(Buffer.from('x')), (e: unknown) => e instanceof MqError && e.code === 'E_BAD_NAME')
    // 1,024 bytes is still a name
    const ok = new EnvelopeSealer({recipients: [{encPublicKey: bob.enc.publicKey, name: 'b'.repeat(1024)}], sender: {name: 'alice', signPrivateKey: alice.sig.privateKey}}).seal(Buffer.from('x'))
    assert.equal(ok.envelope.subarray(0, 4).toString(), 'MQE3')
  })
})
