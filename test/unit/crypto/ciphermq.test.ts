import assert from 'node:assert/strict'
import {constants, createCipheriv, createDecipheriv, generateKeyPairSync, privateDecrypt, publicEncrypt, randomBytes} from 'node:crypto'
import {describe, it} from 'node:test'

import {decryptCipherMq, encryptCipherMq, isCipherMqBody, parseCipherMq} from '../../../src/lib/crypto/ciphermq.js'
import {MqError} from '../../../src/lib/errors.js'

const bob = generateKeyPairSync('rsa', {modulusLength: 2048})
const eve = generateKeyPairSync('rsa', {modulusLength: 2048})

/** Written from the seed's description of Sender.py, independently of our encryptCipherMq. */
function seedSender(message: string, pub = bob.publicKey): string {
  const sessionKey = randomBytes(16)
  const encSessionKey = publicEncrypt({key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING}, sessionKey) // PKCS1_OAEP: SHA-1
  const nonce = randomBytes(16)
  const c = createCipheriv('aes-128-gcm', sessionKey, nonce)
  const ciphertext = Buffer.concat([c.update(message, 'utf8'), c.final()])
  return JSON.stringify({
    ciphertext: ciphertext.toString('base64'),
    enc_session_key: encSessionKey.toString('base64'),
    message_id: crypto.randomUUID(),
    nonce: nonce.toString('base64'),
    tag: c.getAuthTag().toString('base64'),
  })
}

/** ... and of Receiver.py */
function seedReceiver(json: string): string {
  const m = JSON.parse(json)
  const key = privateDecrypt({key: bob.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING}, Buffer.from(m.enc_session_key, 'base64'))
  assert.equal(key.length, 16)
  const nonce = Buffer.from(m.nonce, 'base64')
  assert.equal(nonce.length, 16)
  const d = createDecipheriv('aes-128-gcm', key, nonce)
  d.setAuthTag(Buffer.from(m.tag, 'base64'))
  return Buffer.concat([d.update(Buffer.from(m.ciphertext, 'base64')), d.final()]).toString('utf8')
}

describe('CipherMQ compatibility format', () => {
  it('mq reads what a CipherMQ sender writes', () => {
    const body = seedSender('hello from Sender.py')
    assert.ok(isCipherMqBody(Buffer.from(body)))
    const out = decryptCipherMq(Buffer.from(body), bob.privateKey)
    assert.equal(out.payload.toString(), 'hello from Sender.py')
    assert.equal(out.messageId, JSON.parse(body).message_id)
    assert.equal(out.verified, false)
  })

  it('a CipherMQ receiver reads what mq writes', () => {
    const m = encryptCipherMq(Buffer.from('hello from mq ✓'), bob.publicKey, 'id-1')
    assert.deepEqual(Object.keys(m).sort(), ['ciphertext', 'enc_session_key', 'message_id', 'nonce', 'tag'])
    assert.equal(Buffer.from(m.nonce, 'base64').length, 16)
    assert.equal(seedReceiver(JSON.stringify(m)), 'hello from mq ✓')
  })

  it('rejects tampering, the wrong key and malformed bodies', () => {
    const m = encryptCipherMq(randomBytes(64), bob.publicKey)
    const ct = Buffer.from(m.ciphertext, 'base64')
    ct[3] ^= 1
    assert.throws(() => decryptCipherMq({...m, ciphertext: ct.toString('base64')}, bob.privateKey), (e: MqError) => e.code === 'E_CIPHERMQ_TAG')
    assert.throws(() => decryptCipherMq(m, eve.privateKey), (e: MqError) => e.code === 'E_CIPHERMQ_UNWRAP')
    for (const junk of ['', '{}', '[1]', 'not json', JSON.stringify({...m, nonce: '***'}), JSON.stringify({...m, tag: 'AAAA'})]) {
      assert.throws(() => decryptCipherMq(Buffer.from(junk), bob.privateKey), (e: unknown) => e instanceof MqError)
    }
    assert.equal(isCipherMqBody(Buffer.from('MQE1....')), false)
    assert.throws(() => parseCipherMq('{"message_id":"x"}'), (e: MqError) => e.code === 'E_CIPHERMQ_MALFORMED')
  })
})
