/**
 * The CipherMQ seed's hybrid format, for interoperation with its Sender.py / Receiver.py:
 * a JSON object {message_id, enc_session_key, nonce, tag, ciphertext}, every binary field
 * base64. The session key is 16 bytes (AES-128-GCM), the nonce 16 bytes, and the session key
 * is wrapped with RSA-OAEP using SHA-1 (pycryptodome's PKCS1_OAEP default). The format has no
 * sender signature, so `mq recv` reports such messages as unverified and only accepts them
 * when asked to (--accept ciphermq).
 */
import {KeyObject, constants, createCipheriv, createDecipheriv, privateDecrypt, publicEncrypt, randomBytes, randomUUID} from 'node:crypto'

import {DataError, PermissionError} from '../errors.js'

export interface CipherMqMessage {
  message_id: string
  enc_session_key: string
  nonce: string
  tag: string
  ciphertext: string
}

export interface CipherMqOpened {
  format: 'ciphermq'
  messageId: string
  payload: Buffer
  verified: false
}

const FIELDS = ['message_id', 'enc_session_key', 'nonce', 'tag', 'ciphertext'] as const

/** Encrypts like CipherMQ's Sender.py; returns the JSON object (serialise it as the message body). */
export function encryptCipherMq(payload: Buffer, recipient: KeyObject, messageId: string = randomUUID()): CipherMqMessage {
  const sessionKey = randomBytes(16)
  const nonce = randomBytes(16)
  const encKey = publicEncrypt({key: recipient, oaepHash: 'sha1', padding: constants.RSA_PKCS1_OAEP_PADDING}, sessionKey)
  const cipher = createCipheriv('aes-128-gcm', sessionKey, nonce, {authTagLength: 16})
  const ct = Buffer.concat([cipher.update(payload), cipher.final()])
  return {
    ciphertext: ct.toString('base64'),
    enc_session_key: encKey.toString('base64'),
    message_id: messageId,
    nonce: nonce.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
  }
}

const malformed = (what: string): DataError =>
  new DataError('E_CIPHERMQ_MALFORMED', `Malformed CipherMQ message: ${what}.`, {hint: 'Try this: the body must be JSON {message_id, enc_session_key, nonce, tag, ciphertext} with base64 fields.'})

const B64 = /^[A-Za-z0-9+/]*={0,2}$/

/** Parses a CipherMQ JSON body (bytes or object) and checks every field; throws E_CIPHERMQ_MALFORMED. */
export function parseCipherMq(body: Buffer | string | Record<string, unknown>): CipherMqMessage {
  let v: unknown = body
  if (typeof body === 'string' || Buffer.isBuffer(body)) {
    try {
      v = JSON.parse(body.toString())
    } catch {
      throw malformed('not JSON')
    }
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw malformed('not a JSON object')
  const o = v as Record<string, unknown>
  for (const f of FIELDS) {
    if (typeof o[f] !== 'string' || (o[f] as string).length === 0) throw malformed(`field ${f} missing`)
    if (f !== 'message_id' && !B64.test((o[f] as string).replaceAll(/\s/g, ''))) throw malformed(`field ${f} is not base64`)
  }
  return {ciphertext: o.ciphertext as string, enc_session_key: o.enc_session_key as string, message_id: o.message_id as string, nonce: o.nonce as string, tag: o.tag as string}
}

/** True when a body looks like a CipherMQ message (a JSON object naming its fields), without decrypting. */
export function isCipherMqBody(body: Buffer): boolean {
  if (body.length < 2 || body[0] !== 0x7b /* { */) return false
  try {
    parseCipherMq(body)
    return true
  } catch {
    return false
  }
}

/** Decrypts like CipherMQ's Receiver.py. The result is authentic only to whoever held the recipient's public key. */
export function decryptCipherMq(body: Buffer | string | CipherMqMessage, privateKey: KeyObject): CipherMqOpened {
  const m = parseCipherMq(body as Buffer)
  const nonce = Buffer.from(m.nonce, 'base64')
  const tag = Buffer.from(m.tag, 'base64')
  if (nonce.length < 12 || nonce.length > 64) throw malformed(`nonce of ${nonce.length} bytes`)
  if (tag.length !== 16) throw malformed(`tag of ${tag.length} bytes`)
  let key: Buffer
  try {
    key = privateDecrypt({key: privateKey, oaepHash: 'sha1', padding: constants.RSA_PKCS1_OAEP_PADDING}, Buffer.from(m.enc_session_key, 'base64'))
  } catch {
    throw new PermissionError('E_CIPHERMQ_UNWRAP', 'The CipherMQ session key cannot be decrypted with our private key.', {hint: 'Try this: the message was encrypted for another key, or altered.'})
  }
  const alg = key.length === 16 ? 'aes-128-gcm' : key.length === 24 ? 'aes-192-gcm' : key.length === 32 ? 'aes-256-gcm' : undefined
  if (!alg) throw malformed(`session key of ${key.length} bytes`)
  const d = createDecipheriv(alg, key, nonce, {authTagLength: 16})
  d.setAuthTag(tag)
  try {
    const payload = Buffer.concat([d.update(Buffer.from(m.ciphertext, 'base64')), d.final()])
    return {format: 'ciphermq', messageId: m.message_id, payload, verified: false}
  } catch {
    throw new PermissionError('E_CIPHERMQ_TAG', 'The CipherMQ message fails AES-GCM authentication: it was altered.', {hint: 'Try this: treat the message as forged.'})
  }
}
