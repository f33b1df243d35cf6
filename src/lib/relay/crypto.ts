import {
  type Cipher,
  type CipherGCM,
  type Decipher,
  type DecipherGCM,
  type KeyObject,
  constants,
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
  sign,
  verify,
} from 'node:crypto'

import {randomChunk} from '../util/random.js'
import {derLength} from './protocol.js'

/**
 * The relay client's end-to-end crypto. The server never sees any of it.
 *
 *   strong   (default, protocol v3): RSA-2048 keys, symmetric keys wrapped with RSA-OAEP-SHA-256,
 *            texts and files sealed with AES-256-GCM: counter 8 | nonce 12 | ciphertext | tag 16,
 *            with the message type, sender id, recipient id and counter as associated data. A
 *            symmetric key message is counter 8 | wrapped key | the sender's RSA-PSS-SHA-256
 *            signature over the key, both ids and the counter: client ids are public, so without
 *            it anyone could send a key "as" a peer and then forge that peer's texts and files.
 *            The counter is the sender's, per recipient and increasing (see counters.ts): it is
 *            what lets the recipient refuse a stored message the relay delivers a second time.
 *   messageu (--compat, protocol v2): MessageU's own scheme, kept only to talk to existing
 *            MessageU clients: RSA-1024 (e = 17, a 160-byte SPKI), OAEP-SHA-1, AES-128-CBC with
 *            an all-zero IV and PKCS#7 padding. It is weak: no integrity, equal plaintexts give
 *            equal ciphertexts, and RSA-1024 is breakable.
 */
export type Suite = 'strong' | 'messageu'
export const SUITES: readonly Suite[] = ['strong', 'messageu']

const GCM_NONCE = 12
const GCM_TAG = 16
const ZERO_IV = Buffer.alloc(16)

export function protocolFor(suite: Suite): 2 | 3 {
  return suite === 'strong' ? 3 : 2
}

export function symKeyBytes(suite: Suite): number {
  return suite === 'strong' ? 32 : 16
}

export function generateIdentityKeys(suite: Suite, bits = 2048): {privateKey: KeyObject; publicKeyDer: Buffer} {
  if (suite === 'strong') {
    const {privateKey, publicKey} = generateKeyPairSync('rsa', {modulusLength: Math.max(2048, bits), publicExponent: 65_537})
    return {privateKey, publicKeyDer: publicKey.export({format: 'der', type: 'spki'})}
  }
  // Crypto++'s default exponent 17 is what makes MessageU's SPKI exactly 160 bytes.
  for (;;) {
    const {privateKey, publicKey} = generateKeyPairSync('rsa', {modulusLength: 1024, publicExponent: 17})
    const der = publicKey.export({format: 'der', type: 'spki'})
    if (der.length === 160) return {privateKey, publicKeyDer: der}
  }
}

/** A peer's public key from the wire (MessageU's fixed field may carry trailing zeros). */
export function parsePublicKey(der: Buffer): KeyObject {
  const len = derLength(der)
  return createPublicKey({format: 'der', key: len && len <= der.length ? der.subarray(0, len) : der, type: 'spki'})
}

export function loadPrivateKey(pem: string): KeyObject {
  return createPrivateKey(pem)
}

const oaep = (suite: Suite) => ({oaepHash: suite === 'strong' ? 'sha256' : 'sha1', padding: constants.RSA_PKCS1_OAEP_PADDING})

export function newSymKey(suite: Suite): Buffer {
  return randomBytes(symKeyBytes(suite))
}

export function wrapKey(suite: Suite, peerPublicKey: KeyObject, symKey: Buffer): Buffer {
  return publicEncrypt({key: peerPublicKey, ...oaep(suite)}, symKey)
}

export function unwrapKey(suite: Suite, privateKey: KeyObject, wrapped: Buffer): Buffer {
  const key = privateDecrypt({key: privateKey, ...oaep(suite)}, wrapped)
  if (key.length !== symKeyBytes(suite)) throw new Error(`unwrapped key is ${key.length} bytes, expected ${symKeyBytes(suite)}`)
  return key
}

const KEY_SIG_CONTEXT = Buffer.from('mq-relay-v3-key\0')
const PSS = {padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST}

/** Strong-suite contents of types 2-4 start with the sender's counter: u64 little-endian. */
export const COUNTER_BYTES = 8
/** counter | nonce: what precedes a strong-suite ciphertext */
const HEAD = COUNTER_BYTES + GCM_NONCE

export function encodeCounter(counter: bigint): Buffer {
  const b = Buffer.allocUnsafe(COUNTER_BYTES)
  b.writeBigUInt64LE(counter)
  return b
}

/** The counter at the start of a strong-suite content (not yet authenticated: the tag or signature decides). */
export function readCounter(content: Buffer): bigint {
  if (content.length < COUNTER_BYTES) throw new Error(`content of ${content.length} bytes has no ${COUNTER_BYTES}-byte counter`)
  return content.readBigUInt64LE(0)
}

const keySigInput = (sender: Buffer, recipient: Buffer, counter: Buffer, wrapped: Buffer) => Buffer.concat([KEY_SIG_CONTEXT, sender, recipient, counter, wrapped])

/**
 * The content of a symmetric key message: the wrapped key; in the strong suite preceded by the
 * sender's counter and followed by the sender's signature over both ids, the counter and the key.
 */
export function sealKeyMessage(suite: Suite, senderPrivateKey: KeyObject, peerPublicKey: KeyObject, symKey: Buffer, sender: Buffer, recipient: Buffer, counter: bigint): Buffer {
  const wrapped = wrapKey(suite, peerPublicKey, symKey)
  if (suite !== 'strong') return wrapped
  const c = encodeCounter(counter)
  return Buffer.concat([c, wrapped, sign('sha256', keySigInput(sender, recipient, c, wrapped), {key: senderPrivateKey, ...PSS})])
}

/**
 * Unwraps a symmetric key message. In the strong suite the signature must verify with the
 * sender's public key first; `senderPublicKey` undefined means it could not be found. The
 * counter (strong suite only) is authenticated once this returns.
 */
export function openKeyMessage(suite: Suite, privateKey: KeyObject, senderPublicKey: KeyObject | undefined, content: Buffer, sender: Buffer, recipient: Buffer): {key: Buffer; counter?: bigint} {
  if (suite !== 'strong') return {key: unwrapKey(suite, privateKey, content)}
  const wrappedLen = (privateKey.asymmetricKeyDetails?.modulusLength ?? 0) / 8
  if (!senderPublicKey) throw new Error("the sender's public key is unknown, so the key's signature cannot be checked")
  const counter = content.subarray(0, COUNTER_BYTES)
  const wrapped = content.subarray(COUNTER_BYTES, COUNTER_BYTES + wrappedLen)
  const sig = content.subarray(COUNTER_BYTES + wrappedLen)
  if (wrappedLen === 0 || wrapped.length !== wrappedLen || sig.length === 0 || !verify('sha256', keySigInput(sender, recipient, counter, wrapped), {key: senderPublicKey, ...PSS}, sig)) {
    throw new Error('the key is not signed by its sender (bad signature): someone else sent it with the sender\'s id, or it was altered')
  }
  return {counter: counter.readBigUInt64LE(0), key: unwrapKey(suite, privateKey, wrapped)}
}

/** Associated data binding a sealed content to its type, sender, recipient and the sender's counter. */
export function contentAad(type: number, sender: Buffer, recipient: Buffer, counter: bigint): Buffer {
  // written in place: the five-piece concat allocated four buffers per text
  const out = Buffer.allocUnsafe(AAD_CONTEXT.length + 1 + sender.length + recipient.length + COUNTER_BYTES)
  let at = AAD_CONTEXT.copy(out)
  out[at++] = type
  at += sender.copy(out, at)
  at += recipient.copy(out, at)
  out.writeBigUInt64LE(counter, at)
  return out
}

const AAD_CONTEXT = Buffer.from('mq-relay-v3')

/** Bytes on the wire for a plaintext of plainSize: the strong suite adds counter, nonce and tag. */
export function sealedSize(suite: Suite, plainSize: number): number {
  return suite === 'strong' ? COUNTER_BYTES + GCM_NONCE + plainSize + GCM_TAG : (Math.floor(plainSize / 16) + 1) * 16
}

/** What a sealed content is bound to besides its counter: its type, sender and recipient. */
export interface ContentBinding {
  type: number
  sender: Buffer
  recipient: Buffer
}

export function encrypt(suite: Suite, key: Buffer, binding: ContentBinding, counter: bigint, plaintext: Buffer): Buffer {
  const enc = new ContentEncryptor(suite, key, binding, counter)
  const body = enc.update(plaintext)
  const parts = [enc.start(), body, ...enc.finalParts()]
  return Buffer.concat(parts)
}

/** Opens a whole sealed content; in the strong suite its counter is readCounter(sealed) once this returns. */
export function decrypt(suite: Suite, key: Buffer, binding: ContentBinding, sealed: Buffer): Buffer {
  const dec = new ContentDecryptor(suite, key, binding, sealed.length)
  return Buffer.concat([dec.update(sealed), dec.final()])
}

/** Incremental sealing for files: start() | update()* | final(), sizes known up front. */
export class ContentEncryptor {
  private readonly cipher: Cipher
  private readonly head: Buffer

  constructor(
    private readonly suite: Suite,
    key: Buffer,
    binding: ContentBinding,
    counter: bigint,
  ) {
    if (suite === 'strong') {
      const nonce = randomChunk(GCM_NONCE)
      const c = createCipheriv('aes-256-gcm', key, nonce)
      c.setAAD(contentAad(binding.type, binding.sender, binding.recipient, counter))
      this.cipher = c
      this.head = Buffer.concat([encodeCounter(counter), nonce])
    } else {
      this.head = Buffer.alloc(0)
      this.cipher = createCipheriv('aes-128-cbc', key, ZERO_IV)
    }
  }

  /** The bytes before the ciphertext: counter and nonce (strong), nothing (messageu). */
  start(): Buffer {
    return this.head
  }

  update(chunk: Buffer): Buffer {
    return this.cipher.update(chunk)
  }

  final(): Buffer {
    const parts = this.finalParts()
    return parts.length === 1 ? parts[0] : Buffer.concat(parts)
  }

  /** final() in pieces (the last block; the GCM tag), for a caller that joins everything once. */
  finalParts(): Buffer[] {
    const last = this.cipher.final()
    return this.suite === 'strong' ? [last, (this.cipher as CipherGCM).getAuthTag()] : [last]
  }
}

/**
 * Incremental opening of a sealed content of known total size: the counter and GCM nonce (first
 * 8 + 12 bytes) and the tag (last 16) are routed aside as they pass. final() throws if the
 * content, its counter or its binding was altered.
 */
export class ContentDecryptor {
  private decipher?: Decipher
  private head = Buffer.alloc(0)
  private tag = Buffer.alloc(0)
  private seen = 0

  constructor(
    private readonly suite: Suite,
    private readonly key: Buffer,
    private readonly binding: ContentBinding,
    private readonly total: number,
  ) {
    if (suite === 'strong' && total < HEAD + GCM_TAG) throw new Error('sealed content too short')
    if (suite === 'messageu') {
      if (total === 0 || total % 16 !== 0) throw new Error('AES-CBC content is not a multiple of 16 bytes')
      this.decipher = createDecipheriv('aes-128-cbc', key, ZERO_IV)
    }
  }

  update(chunk: Buffer): Buffer {
    if (this.suite === 'messageu') return this.decipher!.update(chunk)
    const out: Buffer[] = []
    let c = chunk
    if (this.seen < HEAD) {
      const k = Math.min(HEAD - this.seen, c.length)
      this.head = Buffer.concat([this.head, c.subarray(0, k)])
      this.seen += k
      c = c.subarray(k)
      if (this.seen === HEAD) {
        const d = createDecipheriv('aes-256-gcm', this.key, this.head.subarray(COUNTER_BYTES))
        d.setAAD(contentAad(this.binding.type, this.binding.sender, this.binding.recipient, readCounter(this.head)))
        this.decipher = d
      }
    }
    if (c.length === 0) return Buffer.alloc(0)
    const bodyEnd = this.total - GCM_TAG
    const bodyPart = Math.max(0, Math.min(c.length, bodyEnd - this.seen))
    if (bodyPart > 0) out.push(this.decipher!.update(c.subarray(0, bodyPart)))
    this.seen += bodyPart
    const rest = c.subarray(bodyPart)
    if (rest.length > 0) {
      this.tag = Buffer.concat([this.tag, rest])
      this.seen += rest.length
    }
    return out.length === 1 ? out[0] : Buffer.concat(out)
  }

  final(): Buffer {
    if (this.suite === 'messageu') return this.decipher!.final()
    if (this.seen !== this.total || this.tag.length !== GCM_TAG) throw new Error('sealed content truncated')
    const d = this.decipher as DecipherGCM
    d.setAuthTag(this.tag)
    return d.final()
  }
}
