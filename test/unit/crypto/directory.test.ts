import assert from 'node:assert/strict'
import {cpSync, existsSync, mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import {after, before, describe, it} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {configSchema} from '../../../src/lib/config/schema.js'
import {type KeyDirectory, IdentityResolver, cachedCertFiles, publishIdentity} from '../../../src/lib/crypto/directory.js'
import {EnvelopeOpener, EnvelopeSealer} from '../../../src/lib/crypto/envelope.js'
import {MqError} from '../../../src/lib/errors.js'
import {CertificateAuthority, loadIdentity} from '../../../src/lib/pki/index.js'
import {tempHome} from '../../helpers/home.js'

/** The broker's key directory, in memory: it stores whatever it is given, like an untrusted server. */
class MemoryDirectory implements KeyDirectory {
  readonly keys = new Map<string, {encCertPem: string; signCertPem: string}>()
  async getKey(name: string) {
    return this.keys.get(name) ?? null
  }
  async putKey(name: string, encCertPem: string, signCertPem: string) {
    this.keys.set(name, {encCertPem, signCertPem})
  }
}

describe('identity resolution and the key directory', () => {
  const a = tempHome()
  const b = tempHome()
  const homeA = new MqHome(a.dir) // the CA, alice, bob, carol, mallory
  const homeB = new MqHome(b.dir) // another machine: only the CA certificate and dave
  // 2048-bit CA keys keep the test fast; the CA's own key size is not what is tested here
  const cfg = {...configSchema.parse({}).pki, ca_key_bits: 2048}
  let ca: CertificateAuthority
  const dir = new MemoryDirectory()

  before(async () => {
    ca = CertificateAuthority.open(homeA, cfg)
    await ca.init()
    for (const n of ['alice', 'bob', 'carol', 'mallory']) await ca.keygen(n)
    mkdirSync(homeB.pki, {recursive: true})
    cpSync(homeA.caCert, homeB.caCert)
  })
  after(() => {
    a.cleanup()
    b.cleanup()
  })

  it('publishes, fetches, verifies and caches a recipient, then seals to it', async () => {
    await publishIdentity(homeA, dir, 'bob')
    const r = new IdentityResolver(homeB, dir)
    const bob = await r.resolve('bob')
    assert.equal(bob.source, 'directory')
    assert.ok(existsSync(cachedCertFiles(homeB, 'bob').encCert))
    const again = await new IdentityResolver(homeB, dir).resolve('bob')
    assert.equal(again.source, 'cache')
    const alice = loadIdentity(homeA, 'alice', {withPrivate: true})
    const sealed = new EnvelopeSealer({recipients: [bob], sender: {name: 'alice', signPrivateKey: alice.signPrivateKey!}}).seal(Buffer.from('hi'))
    await publishIdentity(homeA, dir, 'alice')
    const bobPriv = loadIdentity(homeA, 'bob', {withPrivate: true})
    // bob's receiver on machine B resolves alice through the directory
    const opened = await new EnvelopeOpener({identity: {encPrivateKey: bobPriv.encPrivateKey!, name: 'bob'}, resolveSender: new IdentityResolver(homeB, dir).senderResolver()}).open(sealed.envelope)
    assert.equal(opened.payload.toString(), 'hi')
  })

  it('refuses a key the directory substitutes (certified for someone else)', async () => {
    const m = loadIdentity(homeA, 'mallory')
    dir.keys.set('carol', {encCertPem: m.encCertPem, signCertPem: m.signCertPem})
    await assert.rejects(new IdentityResolver(homeB, dir).resolve('carol'), (e: MqError) => e.code === 'E_IDENTITY_UNTRUSTED')
  })

  it('refuses a self-made certificate and an unknown name', async () => {
    const other = tempHome()
    try {
      const rogue = CertificateAuthority.open(new MqHome(other.dir), cfg)
      await rogue.init()
      const fake = await rogue.keygen('carol')
      dir.keys.set('carol', {encCertPem: fake.encCertPem, signCertPem: fake.signCertPem})
      await assert.rejects(new IdentityResolver(homeB, dir).resolve('carol'), (e: MqError) => e.code === 'E_IDENTITY_UNTRUSTED')
    } finally {
      other.cleanup()
    }
    await assert.rejects(new IdentityResolver(homeB, dir).resolve('nobody'), (e: MqError) => e.code === 'E_RECIPIENT_UNKNOWN')
    await assert.rejects(new IdentityResolver(homeB, dir).resolve('../x'), (e: MqError) => e.code === 'E_BAD_NAME' && e.exit === 65)
  })

  it('refuses a revoked identity, from local keys and from the cache', async () => {
    await publishIdentity(homeA, dir, 'carol')
    const r = new IdentityResolver(homeB, dir)
    await r.resolve('carol')
    await ca.revoke('carol', 'key-compromise')
    await assert.rejects(new IdentityResolver(homeA, dir).resolve('carol'), (e: MqError) => e.code === 'E_IDENTITY_REVOKED')
    // machine B learns of it through its CRL copy
    cpSync(homeA.crl, homeB.crl)
    await assert.rejects(new IdentityResolver(homeB, dir).resolve('carol'), (e: MqError) => e.code === 'E_IDENTITY_REVOKED')
  })

  it('a tampered cached certificate is not trusted', async () => {
    const f = cachedCertFiles(homeB, 'bob')
    const pem = readFileSync(f.encCert, 'utf8')
    const lines = pem.split('\n')
    lines[5] = lines[5].slice(0, 10) + (lines[5][10] === 'A' ? 'B' : 'A') + lines[5].slice(11)
    writeFileSync(f.encCert, lines.join('\n'))
    dir.keys.delete('bob')
    await assert.rejects(new IdentityResolver(homeB, dir).resolve('bob'), (e: unknown) => e instanceof MqError && /E_IDENTITY_UNTRUSTED/.test(e.code))
  })
})
