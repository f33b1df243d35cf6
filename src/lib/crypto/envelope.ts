/**
 * The native end-to-end envelope (docs/envelope.md): AES-256-GCM under a data key that is
 * wrapped with RSA-OAEP-SHA256 for each recipient inside a "grant" the sender signs with
 * RSA-PSS. A sealer reuses one grant (one data key) for a bounded stream of messages, so the
 * RSA work happens once per key on both sides. An MQE3 envelope carries the signed grant (binary
 * fields: no JSON, base64 or hex on the wire) now and then (by default in every envelope) and
 * otherwise its hash, which the AAD binds; receivers keep the grants they verified (GrantStore), so
 * a reference opens after a restart too. MQE2 (the same framing with a JSON grant) and MQE1 (the
 * grant in every one, JSON header) envelopes are still opened.
 *
 * Because several recipients share the data key, a recipient could forge a GCM tag; each
 * recipient therefore also gets its own MAC key inside its wrapped key, and every message
 * carries one HMAC per recipient over its header and payload digest. Nobody but the sender
 * knows all MAC keys, and the MAC block is itself part of the GCM associated data.
 */
import {
  type CipherGCM,
  KeyObject,
  constants,
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPublicKey,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
  sign,
  timingSafeEqual,
  verify,
} from 'node:crypto'

import {isUtf8} from 'node:buffer'
import * as nodeCrypto from 'node:crypto'

import {DataError, MqError, PermissionError, TempFailError, UsageError} from '../errors.js'
import {type NativeCrypto, type NativeHandle, nativeCrypto} from '../util/native-crypto.js'
import {timeOrderedUuid} from '../wire/ids.js'

/** the first format: JSON header, the grant in every envelope (still opened, no longer written) */
export const ENVELOPE_MAGIC = Buffer.from('MQE1')
/** binary header, JSON grant inline now and then, else its hash (still opened, no longer written) */
export const ENVELOPE2_MAGIC = Buffer.from('MQE2')
/** the format written now (docs/envelope.md): MQE2's framing with a binary grant (GRANT3_MAGIC) */
export const ENVELOPE3_MAGIC = Buffer.from('MQE3')
/** the first bytes of a binary grant: it names its own layout, also when read back from a GrantStore */
export const GRANT3_MAGIC = Buffer.from('MQG3')
/** the algorithm suite of a binary grant, ENVELOPE_ALG (the only one) */
const ALG3_ID = 1
export const ENVELOPE_ALG = 'A256GCM+RSA-OAEP-256+PS256+HS256'
const SIG_CONTEXT = Buffer.from('mq-envelope-grant/1\0')
/** a binary grant is signed under its own context: its signature can never pass for a JSON grant's */
const SIG3_CONTEXT = Buffer.from('mq-envelope-grant/3\0')
const MAC_CONTEXT = Buffer.from('mq-envelope-mac/1\0')
const MAC2_CONTEXT = Buffer.from('mq-envelope-mac/2\0')
const MAC3_CONTEXT = Buffer.from('mq-envelope-mac/3\0')
/** MQE2/MQE3 kinds: the signed grant travels in the envelope, or only its hash (the receiver knows it) */
const KIND_GRANT = 1
const KIND_REF = 2
const GRANT_HASH_LEN = 32
const KID_LEN = 16
const FP_LEN = 32
/** the longest name (sender, recipient) a grant carries, in bytes */
const MAX_NAME_BYTES = 1024
/** the longest wrapped key: RSA-OAEP under an 8192-bit key */
const MAX_WRAPPED_BYTES = 1024
const MAX_RECIPIENTS = 256
const TAG_LEN = 16
const MAC_LEN = 16
const NONCE_LEN = 12
/** GCM with random 96-bit nonces must stay far below 2^32 messages per key; we stop far earlier. */
export const MAX_MESSAGES_PER_KEY = 1_000_000
const MAX_GRANT_BYTES = 1024 * 1024
const MAX_HEADER_BYTES = 256 * 1024
/** Allowed clock skew between a message timestamp and its grant's validity window. */
const SKEW_MS = 5 * 60_000

/** sha256 over the SubjectPublicKeyInfo DER, lowercase hex: names a key independently of its certificate. */
export function spkiSha256(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key
  return createHash('sha256').update(pub.export({format: 'der', type: 'spki'})).digest('hex')
}

export interface Recipient {
  name: string
  encPublicKey: KeyObject
}

export interface Signer {
  name: string
  signPrivateKey: KeyObject
  /** fingerprint of the matching public key; derived when absent */
  signFingerprint?: string
}

export interface SealerOptions {
  sender: Signer
  recipients: Recipient[]
  /** messages per data key before a new one is made (default 100,000, at most 1,000,000) */
  maxMessages?: number
  /** lifetime of a data key in ms (default 10 minutes) */
  maxAgeMs?: number
  /**
   * an envelope carries its signed grant every this many messages of a key (the first one always;
   * default 1000; 1 = every envelope, each self-contained); the others carry its 32-byte hash
   */
  grantEvery?: number
  /** ... and at least this often, so a receiver that joins a stream learns the grant soon (default 1 s) */
  grantIntervalMs?: number
  contentType?: string
  now?: () => number
}

export interface SealOptions {
  messageId?: string
  contentType?: string
  headers?: Record<string, string>
  timestamp?: number
}

export interface SealPiecesOptions extends SealOptions {
  /**
   * A buffer of a sealed message that is no longer in use (its publish confirmed), to seal into when it is
   * long enough and the native addon seals this key (sealPieces then uses a view of it): a sender that reuses
   * its envelopes allocates no new payload-sized buffer per message. The bytes sealed are the same.
   */
  into?: Buffer
}

export interface Grant {
  v: 1
  alg: string
  kid: string
  from: string
  /** fingerprint of the sender's signing key */
  sfp: string
  to: {name: string; fp: string; wk: string}[]
  iat: number
  exp: number
  max: number
}

export interface EnvelopeHeader {
  v: 1
  id: string
  from: string
  to: string[]
  ct: string
  ts: number
  kid: string
  seq: number
  n: string
  h?: Record<string, string>
}

/**
 * A grant as the opener uses it, from either encoding: JSON (MQE1, MQE2) or binary (MQE3). Key id and
 * fingerprints in lowercase hex, the wrapped keys as bytes.
 */
export interface GrantInfo {
  /** the envelope generation the grant belongs to: 1 (JSON grant, MQE1 and MQE2) or 3 (binary, MQE3) */
  encoding: 1 | 3
  kid: string
  from: string
  sfp: string
  to: {name: string; fp: string; wk: Buffer}[]
  iat: number
  exp: number
  max: number
}

export interface Sealed {
  messageId: string
  envelope: Buffer
  keyId: string
  seq: number
  /** the envelope carries its signed grant (else only the grant's hash) */
  grantInline: boolean
}

/** seal()'s envelope as the pieces it is written from (EnvelopeSealer.sealPieces); `length` is their total. */
export interface SealedPieces extends Omit<Sealed, 'envelope'> {
  pieces: Buffer[]
  length: number
  /** the buffer the pieces are views of, when there is one (the native addon's): reusable as `into` once nothing reads them */
  buffer?: Buffer
}

/** A message that was opened and fully verified. */
export interface Opened {
  format: 'native'
  messageId: string
  sender: string
  recipients: string[]
  contentType: string
  timestamp: number
  headers: Record<string, string>
  payload: Buffer
  keyId: string
  seq: number
  verified: true
}

function canonicalRecipients(recipients: Recipient[]): Recipient[] {
  const seen = new Set<string>()
  for (const r of recipients) {
    if (seen.has(r.name)) throw new UsageError('E_DUPLICATE_RECIPIENT', `Recipient ${r.name} is named twice.`, {hint: 'Try this: name each --to once.'})
    seen.add(r.name)
  }
  if (recipients.length === 0) throw new UsageError('E_NO_RECIPIENTS', 'An encrypted message needs at least one recipient.', {hint: 'Try this: add --to NAME (or --plain to send unencrypted).'})
  if (recipients.length > MAX_RECIPIENTS) throw new UsageError('E_TOO_MANY_RECIPIENTS', `At most 256 recipients per message (got ${recipients.length}).`)
  return recipients
}

const u32 = (n: number): Buffer => {
  const b = Buffer.allocUnsafe(4)
  b.writeUInt32BE(n)
  return b
}

const u16 = (n: number): Buffer => {
  const b = Buffer.allocUnsafe(2)
  b.writeUInt16BE(n)
  return b
}

interface ActiveKey {
  kid: string
  max: number
  exp: number
  grantBytes: Buffer
  grantHash: Buffer
  signature: Buffer
  dataKey: Buffer
  macKeys: Buffer[]
  /** the HMAC pads of macKeys, made once per key (see macPads) */
  macPads: MacPads[]
  count: number
  /** when an envelope last carried this grant */
  inlineAt: number
  /** the grant part of an inline MQE3 envelope: u32 G, grant, u16 S, signature */
  inlineBytes: Buffer
  /** the native addon, when it seals this key's messages (else node:crypto) */
  native?: NativeCrypto
  /** dataKey's AES-GCM context, keyed once (native) */
  gcm?: NativeHandle
  /** macKeys' pad states (native, with several recipients) */
  macNative?: NativeHandle
}

/** Frees a key's native contexts now (their key material is cleansed); the GC would do it later. */
function disposeNative(k: {native?: NativeCrypto; gcm?: NativeHandle; macNative?: NativeHandle} | undefined): void {
  if (!k?.native) return
  if (k.gcm) k.native.gcmDispose(k.gcm)
  if (k.macNative) k.native.macDispose(k.macNative)
  k.gcm = k.macNative = undefined
}

/** Native handles for one data key: its AES-GCM context, and the MAC keys' pads when there are several. */
function nativeKeys(native: NativeCrypto | undefined, dataKey: Buffer, macKeys: Buffer[], withMacs: boolean, decrypt: boolean): {native?: NativeCrypto; gcm?: NativeHandle; macNative?: NativeHandle} {
  if (!native) return {}
  let macNative: NativeHandle | undefined
  if (withMacs) {
    const all = Buffer.concat(macKeys)
    macNative = native.macKeys(all)
    all.fill(0)
  }
  return {gcm: native.gcmKey(dataKey, decrypt), macNative, native}
}

/** Seals messages from one sender to one fixed set of recipients, rotating the data key by count and age. */
export class EnvelopeSealer {
  private readonly sender: Signer
  private readonly senderFp: string
  private readonly recipients: Recipient[]
  private readonly maxMessages: number
  private readonly maxAgeMs: number
  private readonly grantEvery: number
  private readonly grantIntervalMs: number
  private readonly contentType: string
  private readonly now: () => number
  private active?: ActiveKey
  /** how many data keys were made (and so how many RSA wraps per recipient) */
  keysCreated = 0

  constructor(opts: SealerOptions) {
    this.sender = opts.sender
    this.senderFp = opts.sender.signFingerprint ?? spkiSha256(opts.sender.signPrivateKey)
    this.recipients = canonicalRecipients(opts.recipients)
    this.maxMessages = Math.max(1, Math.min(opts.maxMessages ?? 100_000, MAX_MESSAGES_PER_KEY))
    this.maxAgeMs = Math.max(1, opts.maxAgeMs ?? 10 * 60_000)
    this.grantEvery = Math.max(1, opts.grantEvery ?? 1)
    this.grantIntervalMs = Math.max(0, opts.grantIntervalMs ?? 1000)
    this.contentType = opts.contentType ?? DEFAULT_CONTENT_TYPE
    this.now = opts.now ?? Date.now
  }

  private newKey(now: number): ActiveKey {
    const dataKey = randomBytes(32)
    const macKeys: Buffer[] = []
    const to = this.recipients.map((r) => {
      const macKey = randomBytes(32)
      macKeys.push(macKey)
      const wk = publicEncrypt({key: r.encPublicKey, oaepHash: 'sha256', padding: constants.RSA_PKCS1_OAEP_PADDING}, Buffer.concat([dataKey, macKey]))
      return {fp: Buffer.from(spkiSha256(r.encPublicKey), 'hex'), name: r.name, wk}
    })
    const kid = randomBytes(KID_LEN)
    const exp = now + this.maxAgeMs
    const grantBytes = encodeGrant3({exp, from: this.sender.name, iat: now, kid, max: this.maxMessages, sfp: Buffer.from(this.senderFp, 'hex'), to})
    const signature = sign('sha256', Buffer.concat([SIG3_CONTEXT, grantBytes]), {
      key: this.sender.signPrivateKey,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: constants.RSA_PSS_SALTLEN_DIGEST,
    })
    this.keysCreated++
    const inlineBytes = Buffer.concat([u32(grantBytes.length), grantBytes, u16(signature.length), signature])
    return {
      count: 0,
      dataKey,
      exp,
      grantBytes,
      grantHash: hashGrant(grantBytes, signature),
      inlineAt: now,
      inlineBytes,
      kid: kid.toString('hex'),
      macKeys,
      macPads: macKeys.map(macPads),
      max: this.maxMessages,
      signature,
      ...nativeKeys(nativeCrypto(), dataKey, macKeys, macKeys.length > 1, false),
    }
  }

  /** Starts a new data key for the next message (e.g. when the caller wants to limit exposure). */
  rotate(): void {
    disposeNative(this.active)
    this.active = undefined
  }

  seal(payload: Buffer, opts: SealOptions = {}): Sealed {
    const s = this.start(payload, opts, WHOLE)
    // one allocation for the whole envelope (GCM's ciphertext is as long as the payload); the
    // ciphertext is written into it piece by piece (gcmInto), never held as a separate body
    const envelope = s.out
    let off = s.off
    const {k} = s
    if (k.native && k.gcm) {
      // ciphertext and tag straight into the envelope, under the context keyed once for this data key
      k.native.gcmSeal(k.gcm, s.nonce, s.aad, payload, envelope, off)
    } else {
      const cipher = gcmCipher(k.dataKey, s.nonce, s.aad)
      off = gcmInto(cipher, payload, envelope, off)
      // GCM's final() only computes the tag; every byte of the envelope is written before it leaves
      if (cipher.final().length !== 0 || off !== envelope.length - TAG_LEN) throw new Error('AES-GCM output length')
      cipher.getAuthTag().copy(envelope, off)
    }
    return {envelope, grantInline: s.inline, keyId: s.keyId, messageId: s.messageId, seq: s.seq}
  }

  /**
   * The same envelope as seal(), byte for byte, as pieces to be written one after the other: the
   * prefix (magic to MAC block), the ciphertext as update() returns it, the tag. A big message's
   * ciphertext then goes to the socket as it is instead of being copied into one envelope buffer
   * (at 64 KiB that copy was a third of the sender's garbage). The native addon encrypts into one
   * envelope buffer, with no copy to save: the pieces are then views of it.
   */
  sealPieces(payload: Buffer, opts: SealPiecesOptions = {}): SealedPieces {
    const s = this.start(payload, opts, PIECES, opts.into)
    if (s.buffer) {
      // encrypted into one envelope buffer (no copy to save), handed out as the same pieces: views of it
      const envelope = s.out
      const prefixLen = s.off
      s.k.native!.gcmSeal(s.k.gcm!, s.nonce, s.aad, payload, envelope, prefixLen)
      const pieces = [envelope.subarray(0, prefixLen)]
      for (let i = 0; i < payload.length; i += GCM_PIECE) pieces.push(envelope.subarray(prefixLen + i, prefixLen + Math.min(payload.length, i + GCM_PIECE)))
      pieces.push(envelope.subarray(envelope.length - TAG_LEN))
      return {buffer: s.buffer, grantInline: s.inline, keyId: s.keyId, length: envelope.length, messageId: s.messageId, pieces, seq: s.seq}
    }
    const cipher = gcmCipher(s.k.dataKey, s.nonce, s.aad)
    const pieces = [s.out]
    let n = 0
    for (let i = 0; i < payload.length; i += GCM_PIECE) {
      const c = cipher.update(payload.subarray(i, i + GCM_PIECE))
      n += c.length
      if (c.length > 0) pieces.push(c)
    }
    if (cipher.final().length !== 0 || n !== payload.length) throw new Error('AES-GCM output length')
    pieces.push(cipher.getAuthTag())
    return {grantInline: s.inline, keyId: s.keyId, length: s.off + n + TAG_LEN, messageId: s.messageId, pieces, seq: s.seq}
  }

  /**
   * Everything of a seal up to the ciphertext: key, nonce, header, MACs and the AAD. The prefix (magic to
   * MAC block) is written straight into the output, the header and MACs where they go (no buffers of their
   * own); the AAD and the MAC input are assembled in this sealer's scratch buffers, which hold only bytes
   * the envelope carries anyway (hash, header, MACs) and are used synchronously, before the next seal.
   * `out`: WHOLE, the whole envelope (a new buffer); PIECES, with the native addon the whole envelope in
   * `into` when it is long enough (else a buffer of its own: `buffer`), without it the prefix alone.
   */
  private start(payload: Buffer, opts: SealOptions, target: typeof WHOLE | typeof PIECES, into?: Buffer) {
    const now = this.now()
    let k = this.active
    if (!k || k.count >= k.max || now >= k.exp) {
      disposeNative(k)
      k = this.active = this.newKey(now)
    }
    const seq = k.count++
    const inline = seq % this.grantEvery === 0 || now - k.inlineAt >= this.grantIntervalMs
    if (inline) k.inlineAt = now
    const nonce = nextNonce()
    // time-ordered: each receiver's replay database is keyed by (sender, id), and v4 ids dirtied a page per message there (timeOrderedUuid)
    const messageId = opts.messageId ?? timeOrderedUuid(now)
    const headers = opts.headers && Object.keys(opts.headers).length > 0 ? opts.headers : undefined
    const h = header2Fields(messageId, opts.contentType ?? this.contentType, headers)
    const grantPart = inline ? k.inlineBytes : k.grantHash
    const macLen = k.macKeys.length > 1 ? k.macKeys.length * MAC_LEN : 0
    // u16(H) at lenOff, the header after it, then u16(M) and the MAC block: the AAD's tail, as it is in the envelope
    const lenOff = 5 + grantPart.length
    const hOff = lenOff + 2
    const macOff = hOff + h.length + 2
    const prefixLen = macOff + macLen
    const len = prefixLen + payload.length + TAG_LEN
    let buffer: Buffer | undefined
    let out: Buffer
    if (target === WHOLE) out = Buffer.allocUnsafe(len)
    else if (k.native && k.gcm) {
      // never a slice of Node's shared pool: the whole buffer is the caller's to reuse
      buffer = into && into.length >= len ? into : Buffer.allocUnsafeSlow(len)
      out = buffer.subarray(0, len)
    } else out = Buffer.allocUnsafe(prefixLen)
    ENVELOPE3_MAGIC.copy(out, 0)
    out[4] = inline ? KIND_GRANT : KIND_REF
    grantPart.copy(out, 5)
    out.writeUInt16BE(h.length, lenOff)
    writeHeader2(FORMAT3, out, hOff, opts.timestamp ?? now, seq, nonce, messageId, h)
    out.writeUInt16BE(macLen, macOff - 2)
    // per-recipient MACs over header + payload digest, themselves covered by the GCM tag
    if (macLen > 0) {
      if (k.native && k.macNative) {
        const headLen = macHeadLength(FORMAT3, h.length)
        const head = this.macScratch.view(headLen)
        let off = FORMAT3.macContext.copy(head, 0)
        off += k.grantHash.copy(head, off)
        out.copy(head, off, lenOff, macOff - 2)
        k.native.macs(k.macNative, head, payload, out, macOff)
      } else macsFor2(FORMAT3, k.macKeys, k.macPads, k.grantHash, out.subarray(hOff, hOff + h.length), payload).copy(out, macOff)
    }
    // AAD = magic || gh || u16(H) || header || u16(M) || MAC block
    const aad = this.aadScratch.view(4 + GRANT_HASH_LEN + prefixLen - lenOff)
    FORMAT3.magic.copy(aad, 0)
    k.grantHash.copy(aad, 4)
    out.copy(aad, 4 + GRANT_HASH_LEN, lenOff, prefixLen)
    return {aad, buffer, inline, k, keyId: k.kid, messageId, nonce, off: prefixLen, out, seq}
  }

  /** the AAD of the message being sealed, and the MAC input's head (see start) */
  private readonly aadScratch = new Scratch()
  private readonly macScratch = new Scratch()
}

const WHOLE = 0
const PIECES = 1

/**
 * A reusable buffer for bytes built and consumed within one synchronous call (an AAD, a MAC input): a
 * stream's messages have the same lengths, so the same view is handed out again instead of a new buffer.
 */
class Scratch {
  private buf = Buffer.alloc(0)
  private last = Buffer.alloc(0)

  view(len: number): Buffer {
    if (this.last.length === len) return this.last
    if (this.buf.length < len) this.buf = Buffer.allocUnsafeSlow(Math.max(len, 512))
    this.last = this.buf.subarray(0, len)
    return this.last
  }
}

/** node:crypto's AES-256-GCM cipher for one message, its AAD set (without the native addon) */
function gcmCipher(key: Buffer, nonce: Buffer, aadBytes: Buffer): CipherGCM {
  const cipher = createCipheriv('aes-256-gcm', key, nonce, {authTagLength: TAG_LEN})
  cipher.setAAD(aadBytes)
  return cipher
}

/**
 * What tells MQE2 and MQE3 apart beyond the grant's encoding: each has its own magic (first in the
 * AAD), header version byte and MAC context, and its grant encoding its own signature context
 * (SIG_CONTEXT, SIG3_CONTEXT), so no part of one can pass for the other.
 */
interface BinaryFormat {
  magic: Buffer
  headerVersion: number
  macContext: Buffer
  /** the grant encoding this envelope format carries */
  grantEncoding: 1 | 3
}
const FORMAT2: BinaryFormat = {grantEncoding: 1, headerVersion: 2, macContext: MAC2_CONTEXT, magic: ENVELOPE2_MAGIC}
const FORMAT3: BinaryFormat = {grantEncoding: 3, headerVersion: 3, macContext: MAC3_CONTEXT, magic: ENVELOPE3_MAGIC}

/**
 * The MQE2/MQE3 header: u8 version (2 or 3, the format's), u64 ts, u32 seq, 12-byte nonce, u16 + message id, u16 + content
 * type, u16 + user headers as JSON (0: none). Sender, recipients and key id are the grant's.
 * header2Fields checks the variable fields and gives the header's length; writeHeader2 writes it where it goes.
 */
interface HeaderFields {
  /** the header's length in bytes */
  length: number
  idLen: number
  /** '' for the usual content type */
  ct: string
  ctLen: number
  h: Buffer
}

function header2Fields(id: string, ct: string, headers?: Record<string, string>): HeaderFields {
  // the usual content type costs nothing on the wire: an empty one means it
  if (ct === DEFAULT_CONTENT_TYPE) ct = ''
  const idLen = Buffer.byteLength(id)
  const ctLen = ct === '' ? 0 : Buffer.byteLength(ct)
  const h = headers ? Buffer.from(JSON.stringify(headers)) : EMPTY
  if (idLen === 0 || idLen > MAX_ID_BYTES) throw new UsageError('E_MESSAGE_ID', `A message id must be 1 to ${MAX_ID_BYTES} bytes (got ${idLen}).`)
  if (ctLen > MAX_ID_BYTES) throw new UsageError('E_CONTENT_TYPE', `A content type must be at most ${MAX_ID_BYTES} bytes (got ${ctLen}).`)
  if (h.length > 0xffff) throw new UsageError('E_HEADER', `The user headers are too large (${h.length} bytes as JSON, at most 65535).`)
  return {ct, ctLen, h, idLen, length: 1 + 8 + 4 + NONCE_LEN + 2 + idLen + 2 + ctLen + 2 + h.length}
}

/** writes the header (fields from header2Fields) at b[off..] */
function writeHeader2(f: BinaryFormat, b: Buffer, off: number, ts: number, seq: number, nonce: Buffer, id: string, x: HeaderFields): void {
  b[off] = f.headerVersion
  b.writeUInt32BE(Math.floor(ts / 2 ** 32), off + 1)
  b.writeUInt32BE(ts % 2 ** 32, off + 5)
  b.writeUInt32BE(seq, off + 9)
  nonce.copy(b, off + 13)
  off = b.writeUInt16BE(x.idLen, off + 13 + NONCE_LEN)
  off += b.write(id, off)
  off = b.writeUInt16BE(x.ctLen, off)
  if (x.ctLen > 0) off += b.write(x.ct, off)
  off = b.writeUInt16BE(x.h.length, off)
  x.h.copy(b, off)
}

interface Header2 {
  ts: number
  seq: number
  nonce: Buffer
  id: string
  ct: string
  h?: Record<string, string>
}

function decodeHeader2(f: BinaryFormat, b: Buffer): Header2 {
  let off = 13 + NONCE_LEN
  if (b.length < off + 6 || b[0] !== f.headerVersion) throw bad(b.length > 0 && b[0] !== f.headerVersion ? `unsupported header version ${b[0]}` : 'truncated header')
  const ts = b.readUInt32BE(1) * 2 ** 32 + b.readUInt32BE(5)
  if (!Number.isSafeInteger(ts)) throw bad('header timestamp')
  const seq = b.readUInt32BE(9)
  const nonce = b.subarray(13, 13 + NONCE_LEN)
  // the three length-prefixed fields, as offsets (no view per field): [start, end) each
  const idEnd = headerField(b, off, 'message id')
  const idStart = off + 2
  const ctEnd = headerField(b, idEnd, 'content type')
  const ctStart = idEnd + 2
  const hEnd = headerField(b, ctEnd, 'headers')
  const hStart = ctEnd + 2
  off = hEnd
  if (off !== b.length) throw bad('trailing bytes in the header')
  if (idEnd === idStart || idEnd - idStart > MAX_ID_BYTES || ctEnd - ctStart > MAX_ID_BYTES) throw bad('header fields')
  const id = utf8Field(b, idStart, idEnd)
  const ct = ctEnd === ctStart ? '' : utf8Field(b, ctStart, ctEnd)
  let h: Record<string, string> | undefined
  if (hEnd > hStart) {
    const v = parseJson(b.subarray(hStart, hEnd), 'header headers')
    if (!Object.values(v).every((x) => typeof x === 'string')) throw bad('header headers')
    h = v as Record<string, string>
  }
  return {ct: ct === '' ? DEFAULT_CONTENT_TYPE : ct, h, id, nonce, seq, ts}
}

/** the end of the u16-length-prefixed header field at off (bounds-checked) */
function headerField(b: Buffer, off: number, what: string): number {
  if (off + 2 > b.length) throw bad(`truncated header ${what}`)
  const end = off + 2 + b.readUInt16BE(off)
  if (end > b.length) throw bad(`truncated header ${what}`)
  return end
}

/** b[start..end) as a string; not UTF-8 is E_ENVELOPE_MALFORMED. ASCII (a UUID) is checked here, anything else by isUtf8. */
function utf8Field(b: Buffer, start: number, end: number): string {
  let ascii = true
  for (let i = start; i < end; i++) {
    if (b[i] > 0x7f) {
      ascii = false
      break
    }
  }
  if (ascii) return b.toString('latin1', start, end)
  if (!isUtf8(b.subarray(start, end))) throw bad('header fields are not UTF-8')
  return b.toString('utf8', start, end)
}

const DEFAULT_CONTENT_TYPE = 'application/octet-stream'

const MAX_ID_BYTES = 1024

/** MQE2/MQE3 associated data: the format's magic, the grant hash, the header and every recipient's MAC, each delimited. */
function aad2(f: BinaryFormat, grantHash: Buffer, headerBytes: Buffer, macBlock: Buffer, scratch?: Scratch): Buffer {
  const len = 4 + GRANT_HASH_LEN + 2 + headerBytes.length + 2 + macBlock.length
  const b = scratch ? scratch.view(len) : Buffer.allocUnsafe(len)
  f.magic.copy(b, 0)
  grantHash.copy(b, 4)
  let off = b.writeUInt16BE(headerBytes.length, 4 + GRANT_HASH_LEN)
  off += headerBytes.copy(b, off)
  off = b.writeUInt16BE(macBlock.length, off)
  macBlock.copy(b, off)
  return b
}

function macsFor2(f: BinaryFormat, macKeys: Buffer[], pads: MacPads[], grantHash: Buffer, headerBytes: Buffer, payload: Buffer): Buffer {
  // the MAC input is the same for every recipient: built (and the payload hashed) once
  const input = macInput2(f, grantHash, headerBytes, payload)
  const out = Buffer.allocUnsafe(macKeys.length * MAC_LEN)
  for (let i = 0; i < macKeys.length; i++) macInto(macKeys[i], pads[i], input, out, i * MAC_LEN)
  return out
}

/**
 * HMAC_BLOCK bytes of room (for macInto), then "mq-envelope-mac/2\0" (MQE2) or "mq-envelope-mac/3\0"
 * (MQE3) || gh || u16(H) || header || SHA-256(payload): the MAC input, after the room
 */
function macInput2(f: BinaryFormat, grantHash: Buffer, headerBytes: Buffer, payload: Buffer): Buffer {
  const b = Buffer.allocUnsafe(HMAC_BLOCK + macHeadLength(f, headerBytes.length) + 32)
  const off = writeMacHead(f, grantHash, headerBytes, b, HMAC_BLOCK)
  // the digest is written where it goes, not made into a Buffer of its own (see sha256Into)
  if (sha256Into(payload, b, off) !== b.length) throw new Error('MAC input length')
  return b
}

/** The MAC input without the payload's digest: "mq-envelope-mac/N\0" || gh || u16(H) || header (native macs() appends the digest). */
function macHead2(f: BinaryFormat, grantHash: Buffer, headerBytes: Buffer): Buffer {
  const b = Buffer.allocUnsafe(macHeadLength(f, headerBytes.length))
  writeMacHead(f, grantHash, headerBytes, b, 0)
  return b
}

function macHeadLength(f: BinaryFormat, headerLength: number): number {
  return f.macContext.length + GRANT_HASH_LEN + 2 + headerLength
}

/** writes the MAC context, gh, u16(H) and the header at b[off..]; returns the offset after them */
function writeMacHead(f: BinaryFormat, grantHash: Buffer, headerBytes: Buffer, b: Buffer, off: number): number {
  off += f.macContext.copy(b, off)
  off += grantHash.copy(b, off)
  off = b.writeUInt16BE(headerBytes.length, off)
  return off + headerBytes.copy(b, off)
}

/** SHA-256's block: HMAC pads its key to it */
const HMAC_BLOCK = 64

/** a MAC key XOR HMAC's inner and outer pad (RFC 2104), made once per key */
interface MacPads {
  ipad: Buffer
  opad: Buffer
}

function macPads(key: Buffer): MacPads {
  // our MAC keys are 32 bytes, shorter than the block: RFC 2104 pads them with zeros
  if (key.length > HMAC_BLOCK) throw new Error('MAC key longer than a SHA-256 block')
  const ipad = Buffer.alloc(HMAC_BLOCK, 0x36)
  const opad = Buffer.alloc(HMAC_BLOCK, 0x5c)
  for (let i = 0; i < key.length; i++) {
    ipad[i] ^= key[i]
    opad[i] ^= key[i]
  }
  return {ipad, opad}
}

/** the outer hash's input: opad || inner digest (one per process: filled and hashed synchronously) */
const HMAC_OUTER = Buffer.alloc(HMAC_BLOCK + 32)

/**
 * HMAC-SHA256(key, input[HMAC_BLOCK..]) truncated to MAC_LEN, written to out at off; input's first
 * HMAC_BLOCK bytes are room for the inner pad. Two one-shot hashes over the pads made once per key:
 * an Hmac object per MAC cost about twice as much (its construction and digest Buffer), and the
 * digests travel as latin1 strings (byte for byte), which crypto.hash returns faster than Buffers.
 */
function macInto(key: Buffer, pads: MacPads, input: Buffer, out: Buffer, off: number): void {
  if (!oneShotHash) {
    createHmac('sha256', key).update(input.subarray(HMAC_BLOCK)).digest().copy(out, off, 0, MAC_LEN)
    return
  }
  pads.ipad.copy(input, 0)
  pads.opad.copy(HMAC_OUTER, 0)
  HMAC_OUTER.write(oneShotHash('sha256', input, 'latin1'), HMAC_BLOCK, 'latin1')
  out.write(oneShotHash('sha256', HMAC_OUTER, 'latin1'), off, MAC_LEN, 'latin1')
}

/** MQE1: binds the signed grant (and its signature), the header and every recipient's MAC to the ciphertext. */
function aad(grantHash: Buffer, headerBytes: Buffer, macBlock: Buffer): Buffer {
  return Buffer.concat([ENVELOPE_MAGIC, grantHash, u32(headerBytes.length), headerBytes, macBlock])
}

/** sha256 over the grant and its signature: the AAD binding and the receiver's cache key. */
function hashGrant(grantBytes: Buffer, signature: Buffer): Buffer {
  return createHash('sha256').update(u32(grantBytes.length)).update(grantBytes).update(signature).digest()
}

const EMPTY = Buffer.alloc(0)

// crypto.hash (Node 20.12+) digests in one call, without a Hash object: half the cost of
// createHash for a small payload; older Node 20 releases use createHash
const oneShotHash = (nodeCrypto as unknown as {hash?: {(alg: string, data: Buffer, enc: 'buffer'): Buffer; (alg: string, data: Buffer, enc: 'latin1'): string}}).hash
/** SHA-256 of a payload (the per-recipient MAC input) */
const sha256 = oneShotHash ? (b: Buffer): Buffer => oneShotHash('sha256', b, 'buffer') : (b: Buffer): Buffer => createHash('sha256').update(b).digest()

/** SHA-256 of data written into out at off (as a latin1 string: no digest Buffer); returns the offset after it */
function sha256Into(data: Buffer, out: Buffer, off: number): number {
  if (!oneShotHash) return off + createHash('sha256').update(data).digest().copy(out, off)
  return off + out.write(oneShotHash('sha256', data, 'latin1'), off, 32, 'latin1')
}

// random nonces drawn from a pooled CSPRNG buffer: one getrandom call per 341 messages, not one each
const NONCE_POOL = 4092
let noncePool = Buffer.alloc(0)
let nonceOff = 0
function nextNonce(): Buffer {
  if (nonceOff + NONCE_LEN > noncePool.length) {
    noncePool = randomBytes(NONCE_POOL)
    nonceOff = 0
  }
  const n = noncePool.subarray(nonceOff, nonceOff + NONCE_LEN)
  nonceOff += NONCE_LEN
  return n
}

/** MQE1's per-recipient MAC (checked when opening old envelopes) */
function messageMac(macKey: Buffer, grantHash: Buffer, headerBytes: Buffer, payloadDigest: Buffer): Buffer {
  return createHmac('sha256', macKey).update(MAC_CONTEXT).update(grantHash).update(u32(headerBytes.length)).update(headerBytes).update(payloadDigest).digest().subarray(0, MAC_LEN)
}

/** The parts of an MQE1 envelope, bounds-checked but not yet verified. */
export interface EnvelopeParts {
  grantBytes: Buffer
  signature: Buffer
  headerBytes: Buffer
  macs: Buffer
  ciphertext: Buffer
  tag: Buffer
}

export function isNativeEnvelope(buf: Buffer): boolean {
  return envelopeVersion(buf) !== 0
}

/**
 * 1, 2 or 3 when buf starts with the magic "MQE1", "MQE2" or "MQE3", else 0. Read byte by byte: it runs
 * several times per message, and a view plus Buffer#equals per magic cost more than the rest of the check.
 */
function envelopeVersion(buf: Buffer): 0 | 1 | 2 | 3 {
  if (buf.length < 4 || buf[0] !== 0x4d || buf[1] !== 0x51 || buf[2] !== 0x45) return 0
  const v = buf[3]
  return v === 0x33 ? 3 : v === 0x32 ? 2 : v === 0x31 ? 1 : 0
}

/** The parts of an MQE2 or MQE3 envelope, bounds-checked but not yet verified. */
export interface Envelope2Parts {
  /** 2 or 3, from the magic */
  version: 2 | 3
  /** the signed grant and its signature when the envelope carries them */
  inline?: {grantBytes: Buffer; signature: Buffer}
  /** the hash of the grant when it does not */
  grantHash?: Buffer
  headerBytes: Buffer
  macs: Buffer
  ciphertext: Buffer
  tag: Buffer
}

/**
 * Reads the length-prefixed fields both formats share; every read is bounds-checked and a short
 * buffer is E_ENVELOPE_MALFORMED naming the field, never an out-of-range read.
 */
class FieldReader {
  constructor(
    private readonly buf: Buffer,
    public off: number,
  ) {}

  private need(n: number, what: string): void {
    if (this.off + n > this.buf.length) throw bad(`truncated ${what}`)
  }

  /** a field preceded by its length (2 or 4 bytes), at most max bytes */
  field(lenBytes: 2 | 4, what: string, max = Number.MAX_SAFE_INTEGER): Buffer {
    this.need(lenBytes, `${what} length`)
    const n = lenBytes === 2 ? this.buf.readUInt16BE(this.off) : this.buf.readUInt32BE(this.off)
    this.off += lenBytes
    if (n > max) throw bad(`${what} too large`)
    return this.bytes(n, what)
  }

  u16(what: string): number {
    this.need(2, what)
    const n = this.buf.readUInt16BE(this.off)
    this.off += 2
    return n
  }

  bytes(n: number, what: string): Buffer {
    this.need(n, what)
    const b = this.buf.subarray(this.off, this.off + n)
    this.off += n
    return b
  }

  /** the MAC block, then the ciphertext and its GCM tag (the rest of the buffer) */
  tail(): {macs: Buffer; ciphertext: Buffer; tag: Buffer} {
    this.need(2, 'MAC length')
    if (this.buf.readUInt16BE(this.off) % MAC_LEN !== 0) throw bad('MAC block length')
    const macs = this.field(2, 'MACs')
    this.need(TAG_LEN, 'ciphertext')
    return {ciphertext: this.buf.subarray(this.off, this.buf.length - TAG_LEN), macs, tag: this.buf.subarray(this.buf.length - TAG_LEN)}
  }
}

/**
 * Splits an MQE2 or MQE3 envelope (the same framing); throws E_ENVELOPE_MALFORMED on any structural
 * problem, never reads out of bounds. The grant inside is parsed later (parseGrant, parseGrant3).
 */
export function parseEnvelope2(buf: Buffer): Envelope2Parts {
  const version = envelopeVersion(buf)
  if (buf.length < 5 || version < 2) throw bad('not an MQE2 or MQE3 envelope')
  const kind = buf[4]
  const r = new FieldReader(buf, 5)
  let inline: Envelope2Parts['inline']
  let grantHash: Buffer | undefined
  if (kind === KIND_GRANT) {
    const grantBytes = r.field(4, 'grant', MAX_GRANT_BYTES)
    inline = {grantBytes, signature: r.field(2, 'signature')}
  } else if (kind === KIND_REF) {
    grantHash = r.bytes(GRANT_HASH_LEN, 'grant hash')
  } else throw bad(`unknown envelope kind ${kind}`)
  const headerBytes = r.field(2, 'header')
  const {ciphertext, macs, tag} = r.tail()
  return {ciphertext, grantHash, headerBytes, inline, macs, tag, version: version === 3 ? 3 : 2}
}

const bad = (what: string): DataError =>
  new DataError('E_ENVELOPE_MALFORMED', `Malformed envelope: ${what}.`, {hint: 'Try this: check that the sender uses mq send (native format); the message was altered or is not an mq envelope.'})

/** Splits an MQE1 envelope; throws E_ENVELOPE_MALFORMED on any structural problem, never reads out of bounds. */
export function parseEnvelope(buf: Buffer): EnvelopeParts {
  if (!isNativeEnvelope(buf)) throw bad('not an mq envelope (magic MQE1 missing)')
  const r = new FieldReader(buf, 4)
  const grantBytes = r.field(4, 'grant', MAX_GRANT_BYTES)
  const signature = r.field(2, 'signature')
  const headerBytes = r.field(4, 'header', MAX_HEADER_BYTES)
  return {grantBytes, headerBytes, signature, ...r.tail()}
}

/**
 * What both formats check against the signed grant before decrypting: the position under the key,
 * the timestamp within its validity, and one MAC per recipient when there are several (with one
 * recipient only sender and recipient know the data key, so the GCM tag authenticates the sender).
 */
function checkWithinGrant(grant: {max: number; iat: number; exp: number; to: unknown[]}, seq: number, ts: number, macs: Buffer): void {
  if (seq >= grant.max) throw fail('E_ENVELOPE_HEADER', 'The message exceeds the number of messages its key grant allows.', 'treat the message as forged.')
  if (ts + SKEW_MS < grant.iat || ts > grant.exp + SKEW_MS) throw fail('E_ENVELOPE_HEADER', 'The message timestamp lies outside its key grant validity.', 'treat the message as forged.')
  if (macs.length !== (grant.to.length > 1 ? grant.to.length * MAC_LEN : 0)) throw fail('E_ENVELOPE_MAC', 'The message carries the wrong number of MACs.', 'treat the message as forged.')
}

/** The GCM tag proves a key holder wrote the message; our own MAC proves that holder was the sender. */
function checkOwnMac(k: {index: number; grant: {from: string; to: unknown[]}}, macs: Buffer, want: () => Buffer): void {
  if (k.grant.to.length <= 1) return
  const mine = macs.subarray(k.index * MAC_LEN, (k.index + 1) * MAC_LEN)
  if (!timingSafeEqual(mine, want())) throw fail('E_ENVELOPE_MAC', `The message MAC does not verify: it was not sent by ${k.grant.from}.`, 'treat the message as forged (another recipient may have written it).')
}

const HEX32 = /^[0-9a-f]{32}$/
const HEX64 = /^[0-9a-f]{64}$/
const isStr = (v: unknown, max = 1024): v is string => typeof v === 'string' && v.length > 0 && v.length <= max
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0

function parseJson(bytes: Buffer, what: string): Record<string, unknown> {
  let v: unknown
  try {
    v = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw bad(`${what} is not JSON`)
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw bad(`${what} is not an object`)
  return v as Record<string, unknown>
}

export function parseGrant(bytes: Buffer): Grant {
  const g = parseJson(bytes, 'grant')
  if (g.v !== 1) throw bad(`unsupported grant version ${String(g.v)}`)
  if (g.alg !== ENVELOPE_ALG) throw bad(`unsupported algorithm ${String(g.alg)}`)
  if (!isStr(g.kid) || !HEX32.test(g.kid)) throw bad('grant kid')
  if (!isStr(g.from)) throw bad('grant sender')
  if (!isStr(g.sfp) || !HEX64.test(g.sfp)) throw bad('grant sender fingerprint')
  if (!isInt(g.iat) || !isInt(g.exp) || !isInt(g.max) || g.max > MAX_MESSAGES_PER_KEY || g.exp < g.iat) throw bad('grant validity')
  if (!Array.isArray(g.to) || g.to.length === 0 || g.to.length > 256) throw bad('grant recipients')
  for (const t of g.to as unknown[]) {
    const r = t as Record<string, unknown>
    if (!r || typeof r !== 'object' || !isStr(r.name) || !isStr(r.fp) || !HEX64.test(r.fp) || !isStr(r.wk, 4096)) throw bad('grant recipient entry')
  }
  return g as unknown as Grant
}

/** A JSON grant (MQE1, MQE2) as the opener uses it. */
function jsonGrantInfo(g: Grant): GrantInfo {
  return {encoding: 1, exp: g.exp, from: g.from, iat: g.iat, kid: g.kid, max: g.max, sfp: g.sfp, to: g.to.map((t) => ({fp: t.fp, name: t.name, wk: Buffer.from(t.wk, 'base64')}))}
}

/** The fields of a binary grant, as the sealer has them. */
export interface Grant3Fields {
  kid: Buffer
  from: string
  sfp: Buffer
  iat: number
  exp: number
  max: number
  to: {name: string; fp: Buffer; wk: Buffer}[]
}

/**
 * The binary grant (docs/envelope.md, "Binary grant"): every field the sender signs, at a fixed
 * place or length-prefixed, nothing encoded as text but the names. About 390 bytes with one recipient
 * instead of about 680 as JSON with base64 and hex.
 */
export function encodeGrant3(g: Grant3Fields): Buffer {
  const from = Buffer.from(g.from)
  const names = g.to.map((t) => Buffer.from(t.name))
  // what a receiver would refuse is refused here, before anything is signed or sent
  for (const [name, b] of [[g.from, from], ...g.to.map((t, i): [string, Buffer] => [t.name, names[i]])] as [string, Buffer][]) {
    if (b.length === 0 || b.length > MAX_NAME_BYTES) throw new UsageError('E_BAD_NAME', `The name "${name.slice(0, 40)}" is ${b.length} bytes: an envelope names identities of 1 to ${MAX_NAME_BYTES} bytes.`)
  }
  if (g.to.some((t) => t.wk.length === 0 || t.wk.length > MAX_WRAPPED_BYTES)) throw new UsageError('E_KEY_SIZE', `A recipient key is larger than RSA-8192: its wrapped key exceeds ${MAX_WRAPPED_BYTES} bytes.`)
  let len = GRANT3_FIXED + 2 + from.length + 2
  for (let i = 0; i < g.to.length; i++) len += 2 + names[i].length + FP_LEN + 2 + g.to[i].wk.length
  const b = Buffer.allocUnsafe(len)
  GRANT3_MAGIC.copy(b, 0)
  b[4] = ALG3_ID
  g.kid.copy(b, 5)
  writeU64(b, g.iat, 21)
  writeU64(b, g.exp, 29)
  b.writeUInt32BE(g.max, 37)
  g.sfp.copy(b, 41)
  let off = b.writeUInt16BE(from.length, GRANT3_FIXED)
  off += from.copy(b, off)
  off = b.writeUInt16BE(g.to.length, off)
  for (let i = 0; i < g.to.length; i++) {
    off = b.writeUInt16BE(names[i].length, off)
    off += names[i].copy(b, off)
    off += g.to[i].fp.copy(b, off)
    off = b.writeUInt16BE(g.to[i].wk.length, off)
    off += g.to[i].wk.copy(b, off)
  }
  if (g.kid.length !== KID_LEN || g.sfp.length !== FP_LEN || off !== len || g.to.some((t) => t.fp.length !== FP_LEN)) throw new Error('binary grant layout')
  return b
}

/** magic 4, alg 1, kid 16, iat 8, exp 8, max 4, sfp 32 */
const GRANT3_FIXED = 4 + 1 + KID_LEN + 8 + 8 + 4 + FP_LEN

function writeU64(b: Buffer, n: number, off: number): void {
  b.writeUInt32BE(Math.floor(n / 2 ** 32), off)
  b.writeUInt32BE(n % 2 ** 32, off + 4)
}

/**
 * Parses a binary grant strictly: its magic and algorithm, every length within its bounds, names
 * non-empty UTF-8 and distinct, validity and message count sane, and not one byte more or less than the
 * fields describe (E_ENVELOPE_MALFORMED naming the field). The signature is checked by the caller.
 */
export function parseGrant3(b: Buffer): GrantInfo {
  if (b.length < GRANT3_FIXED || !b.subarray(0, 4).equals(GRANT3_MAGIC)) throw bad(b.length >= 4 && !b.subarray(0, 4).equals(GRANT3_MAGIC) ? 'not a binary (MQG3) grant' : 'truncated grant')
  if (b[4] !== ALG3_ID) throw bad(`unsupported grant algorithm ${b[4]}`)
  const kid = b.toString('hex', 5, 5 + KID_LEN)
  const iat = b.readUInt32BE(21) * 2 ** 32 + b.readUInt32BE(25)
  const exp = b.readUInt32BE(29) * 2 ** 32 + b.readUInt32BE(33)
  const max = b.readUInt32BE(37)
  if (!Number.isSafeInteger(iat) || !Number.isSafeInteger(exp) || exp < iat || max === 0 || max > MAX_MESSAGES_PER_KEY) throw bad('grant validity')
  const sfp = b.toString('hex', 41, 41 + FP_LEN)
  const r = new FieldReader(b, GRANT3_FIXED)
  const name = (what: string): string => {
    const v = r.field(2, what, MAX_NAME_BYTES)
    if (v.length === 0 || !isUtf8(v)) throw bad(`${what} is not a name`)
    return v.toString('utf8')
  }
  const from = name('grant sender')
  const n = r.u16('grant recipient count')
  if (n === 0 || n > MAX_RECIPIENTS) throw bad('grant recipient count')
  const to: GrantInfo['to'] = []
  const seen = new Set<string>()
  for (let i = 0; i < n; i++) {
    const rn = name('grant recipient')
    if (seen.has(rn)) throw bad('grant names a recipient twice')
    seen.add(rn)
    const fp = r.bytes(FP_LEN, 'grant recipient fingerprint').toString('hex')
    const wk = r.field(2, 'grant wrapped key', MAX_WRAPPED_BYTES)
    if (wk.length === 0) throw bad('grant wrapped key')
    // copies: the grant may live in an envelope buffer that belongs to the caller
    to.push({fp, name: rn, wk: Buffer.from(wk)})
  }
  if (r.off !== b.length) throw bad(`${b.length - r.off} trailing byte(s) after the grant`)
  return {encoding: 3, exp, from, iat, kid, max, sfp, to}
}

/** A grant in the encoding its envelope format carries. */
function parseGrantAs(encoding: 1 | 3, bytes: Buffer): GrantInfo {
  return encoding === 3 ? parseGrant3(bytes) : jsonGrantInfo(parseGrant(bytes))
}

export function parseHeader(bytes: Buffer): EnvelopeHeader {
  const h = parseJson(bytes, 'header')
  if (h.v !== 1) throw bad(`unsupported header version ${String(h.v)}`)
  if (!isStr(h.id, 256) || !isStr(h.from) || !isStr(h.ct, 256) || !isStr(h.kid) || !isStr(h.n, 64)) throw bad('header fields')
  if (!isInt(h.ts) || !isInt(h.seq)) throw bad('header numbers')
  if (!Array.isArray(h.to) || !h.to.every((x) => isStr(x))) throw bad('header recipients')
  if (h.h !== undefined) {
    if (!h.h || typeof h.h !== 'object' || Array.isArray(h.h) || !Object.values(h.h).every((x) => typeof x === 'string')) throw bad('header headers')
  }
  return h as unknown as EnvelopeHeader
}

export interface OpenerIdentity {
  name: string
  encPrivateKey: KeyObject
}

/**
 * Returns the sender's verified signing public key (checked against our CA and CRL by the
 * caller). `fingerprint` is the key the grant claims; return the key you trust for that name.
 */
export type SenderResolver = (name: string, fingerprint: string) => Promise<KeyObject>

interface CachedKey {
  grant: GrantInfo
  index: number
  dataKey: Buffer
  macKey: Buffer
  /** macKey's HMAC pads (see macPads) */
  macPads: MacPads
  /** when the sender's certificate was last found valid for this grant */
  checkedAt: number
  /** the grant's hash (the cache key) and its recipients' names, kept for the per-message fast path */
  hash: Buffer
  names: string[]
  /** the native addon, when it opens this key's messages (else node:crypto) */
  native?: NativeCrypto
  /** dataKey's AES-GCM context, keyed once (native) */
  gcm?: NativeHandle
  /** macKey's pad states (native) */
  macNative?: NativeHandle
}

/**
 * Verified grants kept by a receiver (signed and wrapped: nothing secret), so an MQE2/MQE3 envelope that
 * carries only its grant's hash still opens after a restart or when read later from a dead-letter queue.
 */
export interface GrantStore {
  getGrant(hash: Buffer): {grantBytes: Buffer; signature: Buffer} | undefined
  putGrant(hash: Buffer, grantBytes: Buffer, signature: Buffer, exp: number): void
}

export interface OpenerOptions {
  identity: OpenerIdentity
  resolveSender: SenderResolver
  /** where verified grants are kept across runs (the replay database); in memory only without it */
  grants?: GrantStore
  /** unwrapped data keys kept in memory (default 1024) */
  cacheSize?: number
  /** how often a cached grant's sender is checked again (revocation), ms (default 60 s) */
  recheckMs?: number
  now?: () => number
}

const fail = (code: string, message: string, hint: string): PermissionError => new PermissionError(code, message, {hint: `Try this: ${hint}`})

/** Opens native envelopes for one identity; caches unwrapped data keys by grant. */
export class EnvelopeOpener {
  private readonly identity: OpenerIdentity
  private readonly myFp: string
  private readonly resolveSender: SenderResolver
  private readonly cacheSize: number
  private readonly cache = new Map<string, CachedKey>()
  private readonly recheckMs: number
  private readonly now: () => number
  private readonly grants?: GrantStore
  /** RSA unwraps done so far (cache misses) */
  unwraps = 0
  /** grants verified so far: a reference that was unknown may open now */
  grantsLearned = 0
  /** the key the previous message used */
  private recent?: CachedKey
  /** the last verified grant (copied: the envelope buffer belongs to the caller) */
  private last?: {grantBytes: Buffer; signature: Buffer; hash: Buffer; part?: Buffer}
  /** the AAD of the envelope being opened (see Scratch) */
  private readonly aadScratch = new Scratch()

  constructor(opts: OpenerOptions) {
    this.identity = opts.identity
    this.myFp = spkiSha256(opts.identity.encPrivateKey)
    this.resolveSender = opts.resolveSender
    this.cacheSize = Math.max(1, opts.cacheSize ?? 1024)
    this.recheckMs = opts.recheckMs ?? 60_000
    this.now = opts.now ?? Date.now
    this.grants = opts.grants
  }

  private async unlock(encoding: 1 | 3, grantHash: Buffer, inline?: {grantBytes: Buffer; signature: Buffer}): Promise<CachedKey> {
    // a stream uses one grant: the entry of the previous message, unless its sender is due for a recheck
    const recent = this.recent
    // (an inline grant equal to the last one hands back the very hash object the entry keeps: no compare)
    let k = recent && (recent.hash === grantHash || recent.hash.equals(grantHash)) && this.now() - recent.checkedAt <= this.recheckMs ? recent : undefined
    if (!k) this.recent = k = await this.unlockSlow(encoding, grantHash, inline)
    // an envelope format names its grant encoding: a grant verified for one format does not open the other
    if (k.grant.encoding !== encoding) throw bad(`the grant is not the ${encoding === 3 ? 'binary' : 'JSON'} grant this envelope format carries`)
    return k
  }

  private async unlockSlow(encoding: 1 | 3, grantHash: Buffer, inline?: {grantBytes: Buffer; signature: Buffer}): Promise<CachedKey> {
    const id = grantHash.toString('hex')
    const hit = this.cache.get(id)
    if (hit) {
      // a long-running receiver notices a sender revoked after the grant was cached
      if (this.now() - hit.checkedAt > this.recheckMs) {
        this.cache.delete(id)
        await this.senderKey(hit.grant)
        hit.checkedAt = this.now()
      }
      // LRU: move to the end
      this.cache.delete(id)
      this.cache.set(id, hit)
      return hit
    }
    let parts = inline
    if (!parts) {
      const stored = this.grants?.getGrant(grantHash)
      // the stored copy must still be the grant its hash names (a damaged file is no grant)
      if (!stored || !hashGrant(stored.grantBytes, stored.signature).equals(grantHash)) {
        throw new TempFailError('E_GRANT_UNKNOWN', `The message refers to a key grant (${id.slice(0, 16)}...) this receiver has not seen yet.`, {
          hint: 'Try this: run mq recv again; the message was not rejected. The sender repeats its grant every e2e.grant_every messages and every second, and this receiver keeps every grant it verified.',
        })
      }
      parts = stored
    }
    const grant = parseGrantAs(encoding, parts.grantBytes)
    const index = grant.to.findIndex((t) => t.name === this.identity.name && t.fp === this.myFp)
    if (index < 0) {
      const named = grant.to.some((t) => t.name === this.identity.name)
      throw fail(
        'E_ENVELOPE_NOT_FOR_ME',
        named
          ? `The message was encrypted for another key of ${this.identity.name} (key rotated?).`
          : `The message is not addressed to ${this.identity.name} (recipients: ${grant.to.map((t) => t.name).join(', ')}).`,
        named ? 'ask the sender to re-fetch your certificate (mq keys publish) and resend.' : 'receive with the identity the message was sent to (--identity NAME).',
      )
    }
    const senderKey = await this.senderKey(grant)
    const ok = verify('sha256', Buffer.concat([encoding === 3 ? SIG3_CONTEXT : SIG_CONTEXT, parts.grantBytes]), {key: senderKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST}, parts.signature)
    if (!ok) throw fail('E_ENVELOPE_SIGNATURE', `The key grant is not signed by ${grant.from}.`, 'treat the message as forged; it was altered or signed by someone else.')
    let keys: Buffer
    try {
      keys = privateDecrypt({key: this.identity.encPrivateKey, oaepHash: 'sha256', padding: constants.RSA_PKCS1_OAEP_PADDING}, grant.to[index].wk)
    } catch {
      throw fail('E_ENVELOPE_UNWRAP', 'The data key cannot be unwrapped with our private key.', 'treat the message as corrupt; the sender signed a key we cannot decrypt.')
    }
    this.unwraps++
    if (keys.length !== 64) throw fail('E_ENVELOPE_UNWRAP', 'The unwrapped data key has the wrong length.', 'treat the message as corrupt.')
    const entry: CachedKey = {
      checkedAt: this.now(),
      dataKey: keys.subarray(0, 32),
      grant,
      // the opener's own hash of the last inline grant is shared (nothing writes to either); a view into the caller's envelope is copied
      hash: grantHash === this.last?.hash ? grantHash : Buffer.from(grantHash),
      index,
      macKey: keys.subarray(32),
      macPads: macPads(keys.subarray(32)),
      names: grant.to.map((t) => t.name),
      ...nativeKeys(nativeCrypto(), keys.subarray(0, 32), [keys.subarray(32)], grant.to.length > 1, true),
    }
    // copies: the envelope buffer belongs to the caller
    if (inline) this.grants?.putGrant(Buffer.from(grantHash), Buffer.from(inline.grantBytes), Buffer.from(inline.signature), grant.exp)
    this.grantsLearned++
    this.cache.set(id, entry)
    if (this.cache.size > this.cacheSize) {
      const oldest = this.cache.keys().next().value as string
      const evicted = this.cache.get(oldest)
      this.cache.delete(oldest)
      // the previous message's key may still be used by the next one: the GC frees its contexts then
      if (evicted !== this.recent) disposeNative(evicted)
    }
    return entry
  }

  /** The sender's certified signing key, which must be the one the grant names. */
  private async senderKey(grant: GrantInfo): Promise<KeyObject> {
    let senderKey: KeyObject
    try {
      senderKey = await this.resolveSender(grant.from, grant.sfp)
    } catch (error) {
      if (error instanceof MqError) throw error
      // an unexpected failure of the lookup says nothing about the message: temporary, not a rejection
      throw new TempFailError('E_SENDER_LOOKUP', `Cannot look up the certificate of sender ${grant.from}: ${(error as Error).message}`, {cause: error, hint: 'Try this: run mq recv again; the message was not rejected.'})
    }
    if (spkiSha256(senderKey) !== grant.sfp) {
      throw fail('E_SENDER_KEY_MISMATCH', `The message claims a signing key of ${grant.from} that is not the certified one.`, `if ${grant.from} rotated keys, refresh the cache (mq keys fetch ${grant.from}); otherwise treat the message as forged.`)
    }
    return senderKey
  }

  /**
   * The hash of an inline grant: a stream reuses one grant, so compare bytes with the last one instead of
   * hashing again. `part` is the envelope's grant part (u32 G, grant, u16 S, signature), compared in one call.
   */
  private inlineHash(grantBytes: Buffer, signature: Buffer, part?: {buf: Buffer; start: number; end: number}): Buffer {
    const last = this.last
    if (last) {
      if (part ? last.part !== undefined && last.part.compare(part.buf, part.start, part.end) === 0 : last.grantBytes.equals(grantBytes) && last.signature.equals(signature)) return last.hash
    }
    const hash = hashGrant(grantBytes, signature)
    this.last = {grantBytes: Buffer.from(grantBytes), hash, part: part ? Buffer.from(part.buf.subarray(part.start, part.end)) : undefined, signature: Buffer.from(signature)}
    return hash
  }

  /**
   * Opens and verifies one envelope. `inPlace`: the caller hands `buf` over (a delivery's body nothing else
   * reads): with the native addon the payload is decrypted over the ciphertext in it and returned as a view
   * of it, instead of a fresh payload-sized buffer (at 64 KiB that buffer was a third of the receiver's extra
   * garbage). `buf` is then changed whatever the outcome (a failed tag leaves zeros), so it cannot be opened again.
   */
  async open(buf: Buffer, opts: {inPlace?: boolean} = {}): Promise<Opened> {
    if (envelopeVersion(buf) >= 2) return this.open2(buf, opts.inPlace === true)
    return this.open1(buf)
  }

  /** MQE3 (binary grant) and MQE2 (JSON grant): the same framing and checks, each under its own contexts */
  private async open2(buf: Buffer, inPlace: boolean): Promise<Opened> {
    const parts = parseEnvelope2(buf)
    const f = parts.version === 3 ? FORMAT3 : FORMAT2
    // the grant part runs from after the kind byte to the end of the signature
    const grantHash = parts.inline ? this.inlineHash(parts.inline.grantBytes, parts.inline.signature, {buf, end: parts.inline.signature.byteOffset - buf.byteOffset + parts.inline.signature.length, start: 5}) : parts.grantHash!
    const k = await this.unlock(f.grantEncoding, grantHash, parts.inline)
    const header = decodeHeader2(f, parts.headerBytes)
    const {grant} = k
    // the grant hash in the AAD binds sender, recipients and key id; the header binds id, time and position
    checkWithinGrant(grant, header.seq, header.ts, parts.macs)
    // the AAD is used up by gcmOpen before this returns: built in the opener's scratch buffer, not a new one
    const payload = gcmOpen(k, header.nonce, aad2(f, grantHash, parts.headerBytes, parts.macs, this.aadScratch), parts.ciphertext, parts.tag, inPlace)
    checkOwnMac(k, parts.macs, () => {
      const mac = Buffer.allocUnsafe(MAC_LEN)
      if (k.native && k.macNative) k.native.macs(k.macNative, macHead2(f, grantHash, parts.headerBytes), payload, mac, 0)
      else macInto(k.macKey, k.macPads, macInput2(f, grantHash, parts.headerBytes, payload), mac, 0)
      return mac
    })
    return {
      contentType: header.ct,
      format: 'native',
      headers: header.h ?? {},
      keyId: grant.kid,
      messageId: header.id,
      payload,
      recipients: k.names,
      sender: grant.from,
      seq: header.seq,
      timestamp: header.ts,
      verified: true,
    }
  }

  private async open1(buf: Buffer): Promise<Opened> {
    const parts = parseEnvelope(buf)
    const grantHash = this.inlineHash(parts.grantBytes, parts.signature)
    const k = await this.unlock(1, grantHash, parts)
    const header = parseHeader(parts.headerBytes)
    const {grant} = k
    if (header.kid !== grant.kid || header.from !== grant.from) throw fail('E_ENVELOPE_HEADER', 'The message header does not match its signed key grant.', 'treat the message as forged.')
    if (header.to.length !== grant.to.length || header.to.some((n, i) => n !== grant.to[i].name)) {
      throw fail('E_ENVELOPE_HEADER', 'The message recipients differ from the signed key grant (re-addressed).', 'treat the message as forged.')
    }
    checkWithinGrant(grant, header.seq, header.ts, parts.macs)
    const nonce = Buffer.from(header.n, 'base64')
    if (nonce.length !== NONCE_LEN) throw bad('nonce length')
    const payload = gcmOpen(k, nonce, aad(grantHash, parts.headerBytes, parts.macs), parts.ciphertext, parts.tag)
    checkOwnMac(k, parts.macs, () => messageMac(k.macKey, grantHash, parts.headerBytes, sha256(payload)))
    return {
      contentType: header.ct,
      format: 'native',
      headers: header.h ?? {},
      keyId: grant.kid,
      messageId: header.id,
      payload,
      recipients: header.to,
      sender: grant.from,
      seq: header.seq,
      timestamp: header.ts,
      verified: true,
    }
  }
}

/**
 * seal() encrypts in pieces of at most this many bytes, each copied into the envelope at once, so a big
 * payload's ciphertext is never held whole a second time. Each update() allocates its output: at 64 KiB
 * one piece cost less CPU than four of 16 KiB (measured 39 vs 44 us per seal), and at 1 MiB pieces of
 * 64 KiB no more than of 16 KiB, while one 1 MiB piece cost half as much again (fresh pages).
 */
const GCM_PIECE = 64 * 1024

/** Runs `input` through a GCM cipher into `out` at `off`; returns the offset after it. */
function gcmInto(c: CipherGCM, input: Buffer, out: Buffer, off: number): number {
  for (let i = 0; i < input.length; i += GCM_PIECE) off += c.update(input.subarray(i, i + GCM_PIECE)).copy(out, off)
  return off
}

/** Decrypts and authenticates (the native context keyed once, else node:crypto); a tag that fails is E_ENVELOPE_TAG. */
function gcmOpen(k: {dataKey: Buffer; native?: NativeCrypto; gcm?: NativeHandle}, nonce: Buffer, aadBytes: Buffer, ciphertext: Buffer, tag: Buffer, inPlace = false): Buffer {
  if (k.native && k.gcm) {
    // the tag's length is the framing's (TAG_LEN), the nonce's the header's (NONCE_LEN); OpenSSL compares the tag.
    // In place only over memory no other thread can read before the tag is checked (no SharedArrayBuffer).
    const out = inPlace && k.native.openInPlace && !(ciphertext.buffer instanceof SharedArrayBuffer) ? ciphertext : Buffer.allocUnsafe(ciphertext.length)
    if (!k.native.gcmOpen(k.gcm, nonce, aadBytes, ciphertext, tag, out)) throw fail('E_ENVELOPE_TAG', 'The message fails AES-GCM authentication: it was altered.', 'treat the message as forged.')
    return out
  }
  const decipher = createDecipheriv('aes-256-gcm', k.dataKey, nonce, {authTagLength: TAG_LEN})
  decipher.setAAD(aadBytes)
  decipher.setAuthTag(tag)
  try {
    const a = decipher.update(ciphertext)
    const b = decipher.final()
    return b.length > 0 ? Buffer.concat([a, b]) : a
  } catch {
    throw fail('E_ENVELOPE_TAG', 'The message fails AES-GCM authentication: it was altered.', 'treat the message as forged.')
  }
}
