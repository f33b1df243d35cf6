import assert from 'node:assert/strict'
import {readFileSync, statSync} from 'node:fs'
import {join} from 'node:path'
import {after, describe, it} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {PhoneHasher, RecordsKeyring, maskPhone} from '../../../src/lib/records/crypto.js'
import {hashPassword, verifyPassword} from '../../../src/lib/records/store.js'
import {tempHome} from '../../helpers/home.js'

describe('records crypto', () => {
  const h = tempHome()
  after(h.cleanup)
  const home = new MqHome(h.dir)

  it('creates records.key 0600 on first use and round-trips AES-256-GCM bound to the message id', () => {
    const ring = RecordsKeyring.open(home)
    const file = join(home.secrets, 'records.key')
    assert.equal(statSync(file).mode & 0o777, 0o600)
    assert.equal(ring.current, 1)
    const sealed = ring.seal(Buffer.from('hello secret'), 'm1')
    assert.equal(sealed.data.includes(Buffer.from('hello secret')), false)
    assert.equal(ring.open(sealed, 'm1').toString(), 'hello secret')
    assert.throws(() => ring.open(sealed, 'm2'), /failed authentication/)
    const tampered = Buffer.from(sealed.data)
    tampered[14] ^= 1
    assert.throws(() => ring.open({...sealed, data: tampered}, 'm1'), (e: Error & {code?: string}) => e.code === 'E_RECORDS_CORRUPT')
    // the same plaintext seals differently (random nonce)
    assert.notDeepEqual(ring.seal(Buffer.from('x'), 'm1').data, ring.seal(Buffer.from('x'), 'm1').data)
  })

  it('rotates: new rows use the new version, old rows still open', () => {
    const before = RecordsKeyring.open(home)
    const old = before.seal(Buffer.from('old'), 'm')
    const after2 = RecordsKeyring.rotate(home)
    assert.equal(after2.current, before.current + 1)
    assert.equal(after2.seal(Buffer.from('n'), 'm').keyVersion, after2.current)
    assert.equal(after2.open(old, 'm').toString(), 'old')
    assert.match(readFileSync(after2.file, 'utf8'), /^v1:.*\nv2:/)
  })

  it('hashes numbers with a secret pepper and masks them for display', () => {
    const hasher = PhoneHasher.open(home)
    const hash = hasher.hash('+4915200000000')
    assert.match(hash, /^[0-9a-f]{64}$/)
    assert.equal(hasher.matches('+4915200000000', hash), true)
    assert.equal(hasher.matches('+4915200000001', hash), false)
    // a different pepper (another home) gives a different hash: not a plain SHA-256 of the number
    const h2 = tempHome()
    try {
      assert.notEqual(PhoneHasher.open(new MqHome(h2.dir)).hash('+4915200000000'), hash)
    } finally {
      h2.cleanup()
    }
    assert.equal(maskPhone('+4915200000000'), '+4915****0000')
    assert.equal(maskPhone('+1234567').includes('345'), false)
  })

  it('hashes passwords with scrypt', async () => {
    const s = await hashPassword('correct horse')
    assert.equal(await verifyPassword('correct horse', s), true)
    assert.equal(await verifyPassword('wrong horse', s), false)
  })
})
