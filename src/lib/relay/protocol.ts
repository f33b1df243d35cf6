/**
 * The relay's binary protocol: MessageU version 2 (seed 004), its predecessor version 1
 * (seed 002) and mq's own version 3 (docs/relay.md). All numbers are unsigned little-endian.
 *
 *   v1 request header (22): client id 16 | version 1 | code 1 (100..104) | payload size 4
 *   v2 request header (23): client id 16 | version 1 | code 2 (600..604) | payload size 4
 *   v3 request header (23): as v2 with version = 3; public keys carry a 2-byte length prefix
 *   response header    (7): version 1 | code 2 | payload size 4
 *
 * This module is pure: encoders and decoders over Buffers, shared by the server, the client
 * and the tests.
 */

export const CLIENT_ID_BYTES = 16
export const NAME_BYTES = 255
/** v1/v2's fixed public-key field: an RSA-1024 SubjectPublicKeyInfo with e = 17 (Crypto++'s default). */
export const V2_KEY_BYTES = 160
/** v3's public keys: SPKI DER, length-prefixed, at most this long (RSA-8192 fits). */
export const V3_MAX_KEY_BYTES = 2048
export const V1_HEADER_BYTES = 22
export const V2_HEADER_BYTES = 23
export const RESPONSE_HEADER_BYTES = 7
/** Send-message sub-header: destination id 16 | type 1 | content size 4. */
export const SEND_HEADER_BYTES = 21
/** Pull reply per message: sender id 16 | message id 4 | type 1 | size 4. */
export const PULL_ENTRY_HEADER_BYTES = 25
export const LIST_ENTRY_BYTES = CLIENT_ID_BYTES + NAME_BYTES
/** Padded framing: requests and replies are zero-padded to multiples of this. */
export const PAD_BLOCK = 1024
export const MAX_U32 = 0xffff_ffff

export type ProtocolVersion = 1 | 2 | 3

/** Request kinds, by their offset from the version's base code. */
export const Op = {register: 0, list: 1, publicKey: 2, send: 3, pull: 4} as const
export type OpName = keyof typeof Op
export type OpCode = (typeof Op)[OpName]

export const V1_REQUEST_BASE = 100
export const V2_REQUEST_BASE = 600
export const V1_RESPONSE_BASE = 1000
export const V2_RESPONSE_BASE = 2100
export const ERROR_CODE = 9000

export const MessageType = {keyRequest: 1, symmetricKey: 2, text: 3, file: 4} as const
export type MessageTypeValue = (typeof MessageType)[keyof typeof MessageType]
export const MESSAGE_TYPE_NAMES: Record<number, string> = {1: 'key-request', 2: 'key', 3: 'text', 4: 'file'}

export function requestCode(version: ProtocolVersion, op: OpCode): number {
  return (version === 1 ? V1_REQUEST_BASE : V2_REQUEST_BASE) + op
}

export function responseCode(version: ProtocolVersion, op: OpCode): number {
  return (version === 1 ? V1_RESPONSE_BASE : V2_RESPONSE_BASE) + op
}

export function headerBytes(version: ProtocolVersion): number {
  return version === 1 ? V1_HEADER_BYTES : V2_HEADER_BYTES
}

export interface RequestHeader {
  clientId: Buffer
  /** the version byte as sent */
  versionByte: number
  /** which layout the header used: 1 (1-byte code) or 2/3 (2-byte code; 3 when versionByte is 3) */
  version: ProtocolVersion
  code: number
  op: OpCode
  payloadSize: number
}

/**
 * How many header bytes follow once the first 18 are known, or an error text. Byte 17 is the
 * v1 code (0x64..0x68) or the low byte of the v2 code (600..604 = 0x0258..0x025C): the two
 * ranges do not overlap, so every request says which layout it uses.
 */
export function headerLayout(first18: Buffer): {version: ProtocolVersion; total: number} | {error: string} {
  const versionByte = first18[16]
  const b = first18[17]
  if (b >= V1_REQUEST_BASE && b <= V1_REQUEST_BASE + 4) return {version: 1, total: V1_HEADER_BYTES}
  if (b >= 0x58 && b <= 0x5c) return {version: versionByte === 3 ? 3 : 2, total: V2_HEADER_BYTES}
  return {error: `unknown request code byte 0x${b.toString(16).padStart(2, '0')}`}
}

/** Parses a complete request header (22 or 23 bytes). */
export function decodeRequestHeader(buf: Buffer): RequestHeader | {error: string} {
  if (buf.length < 18) return {error: 'truncated header'}
  const layout = headerLayout(buf)
  if ('error' in layout) return layout
  if (buf.length < layout.total) return {error: 'truncated header'}
  const clientId = Buffer.from(buf.subarray(0, CLIENT_ID_BYTES))
  const versionByte = buf[16]
  if (layout.version === 1) {
    const code = buf[17]
    return {clientId, code, op: (code - V1_REQUEST_BASE) as OpCode, payloadSize: buf.readUInt32LE(18), version: 1, versionByte}
  }
  const code = buf.readUInt16LE(17)
  if (code < V2_REQUEST_BASE || code > V2_REQUEST_BASE + 4) return {error: `unknown request code ${code}`}
  return {clientId, code, op: (code - V2_REQUEST_BASE) as OpCode, payloadSize: buf.readUInt32LE(19), version: layout.version, versionByte}
}

export function encodeRequestHeader(version: ProtocolVersion, clientId: Buffer, op: OpCode, payloadSize: number, versionByte: number = version): Buffer {
  if (clientId.length !== CLIENT_ID_BYTES) throw new Error('client id must be 16 bytes')
  // every byte is written below: a pooled buffer, not a fresh zeroed one per request
  const h = Buffer.allocUnsafe(headerBytes(version))
  clientId.copy(h, 0)
  h[16] = versionByte
  if (version === 1) {
    h[17] = requestCode(1, op)
    h.writeUInt32LE(payloadSize, 18)
  } else {
    h.writeUInt16LE(requestCode(version, op), 17)
    h.writeUInt32LE(payloadSize, 19)
  }
  return h
}

export function encodeRequest(version: ProtocolVersion, clientId: Buffer, op: OpCode, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([encodeRequestHeader(version, clientId, op, payload.length), payload])
}

export interface ResponseHeader {
  version: number
  code: number
  payloadSize: number
}

export function encodeResponseHeader(versionByte: number, code: number, payloadSize: number): Buffer {
  const h = Buffer.allocUnsafe(RESPONSE_HEADER_BYTES)
  writeResponseHeader(h, versionByte, code, payloadSize)
  return h
}

/** The response header into the first RESPONSE_HEADER_BYTES of `frame`. */
export function writeResponseHeader(frame: Buffer, versionByte: number, code: number, payloadSize: number): void {
  frame[0] = versionByte
  frame.writeUInt16LE(code, 1)
  frame.writeUInt32LE(payloadSize, 3)
}

export function decodeResponseHeader(buf: Buffer): ResponseHeader {
  return {code: buf.readUInt16LE(1), payloadSize: buf.readUInt32LE(3), version: buf[0]}
}

/** Zero bytes that bring `length` up to the next multiple of PAD_BLOCK. */
export function padLength(length: number): number {
  const r = length % PAD_BLOCK
  return r === 0 ? 0 : PAD_BLOCK - r
}

export function padFrame(frame: Buffer): Buffer {
  const n = padLength(frame.length)
  return n === 0 ? frame : Buffer.concat([frame, Buffer.alloc(n)])
}

// ---- names -------------------------------------------------------------------------------

/** A user name: 1..254 printable ASCII characters (the field is 255 bytes, NUL-terminated). */
export function validateName(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty'
  if (name.length > NAME_BYTES - 1) return `the name is ${name.length} characters; at most ${NAME_BYTES - 1} fit`
  if (!/^[\x20-\x7e]+$/.test(name)) return 'the name must be printable ASCII'
  return undefined
}

export function encodeName(name: string): Buffer {
  const problem = validateName(name)
  if (problem) throw new Error(problem)
  const b = Buffer.alloc(NAME_BYTES)
  b.write(name, 0, 'ascii')
  return b
}

/** Decodes a 255-byte name field: everything up to the first NUL, which must exist. */
export function decodeName(field: Buffer): {name: string} | {error: string} {
  const nul = field.indexOf(0)
  if (nul < 0) return {error: 'name is not NUL-terminated'}
  const name = field.subarray(0, nul).toString('latin1')
  const problem = validateName(name)
  return problem ? {error: problem} : {name}
}

// ---- payloads ----------------------------------------------------------------------------

export function encodeRegisterPayload(version: ProtocolVersion, name: string, publicKey: Buffer): Buffer {
  if (version === 3) {
    if (publicKey.length === 0 || publicKey.length > V3_MAX_KEY_BYTES) throw new Error(`v3 public key must be 1..${V3_MAX_KEY_BYTES} bytes`)
    const len = Buffer.alloc(2)
    len.writeUInt16LE(publicKey.length)
    return Buffer.concat([encodeName(name), len, publicKey])
  }
  if (publicKey.length !== V2_KEY_BYTES) throw new Error(`v${version} public key must be exactly ${V2_KEY_BYTES} bytes`)
  return Buffer.concat([encodeName(name), publicKey])
}

export function decodeRegisterPayload(version: ProtocolVersion, payload: Buffer): {name: string; publicKey: Buffer} | {error: string} {
  if (version === 3) {
    if (payload.length < NAME_BYTES + 3) return {error: 'register payload too short'}
    const keyLen = payload.readUInt16LE(NAME_BYTES)
    if (keyLen === 0 || keyLen > V3_MAX_KEY_BYTES) return {error: `public key length ${keyLen} outside 1..${V3_MAX_KEY_BYTES}`}
    if (payload.length !== NAME_BYTES + 2 + keyLen) return {error: `register payload is ${payload.length} bytes, key length says ${NAME_BYTES + 2 + keyLen}`}
    const n = decodeName(payload.subarray(0, NAME_BYTES))
    if ('error' in n) return n
    return {name: n.name, publicKey: Buffer.from(payload.subarray(NAME_BYTES + 2))}
  }
  if (payload.length !== NAME_BYTES + V2_KEY_BYTES) return {error: `register payload is ${payload.length} bytes, expected ${NAME_BYTES + V2_KEY_BYTES}`}
  const n = decodeName(payload.subarray(0, NAME_BYTES))
  if ('error' in n) return n
  return {name: n.name, publicKey: Buffer.from(payload.subarray(NAME_BYTES))}
}

/** 2102/1002 payload: client id 16 | key (160 bytes in v1/v2; 2-byte length + key in v3). */
export function encodePublicKeyPayload(version: ProtocolVersion, clientId: Buffer, publicKey: Buffer): Buffer {
  if (version === 3) {
    const len = Buffer.alloc(2)
    len.writeUInt16LE(publicKey.length)
    return Buffer.concat([clientId, len, publicKey])
  }
  if (publicKey.length !== V2_KEY_BYTES) throw new Error(`a ${publicKey.length}-byte key does not fit protocol version ${version}`)
  return Buffer.concat([clientId, publicKey])
}

export function decodePublicKeyPayload(version: ProtocolVersion, payload: Buffer): {clientId: Buffer; publicKey: Buffer} | {error: string} {
  if (version === 3) {
    if (payload.length < CLIENT_ID_BYTES + 2) return {error: 'public key reply too short'}
    const len = payload.readUInt16LE(CLIENT_ID_BYTES)
    if (payload.length !== CLIENT_ID_BYTES + 2 + len) return {error: 'public key reply length mismatch'}
    return {clientId: Buffer.from(payload.subarray(0, CLIENT_ID_BYTES)), publicKey: Buffer.from(payload.subarray(CLIENT_ID_BYTES + 2))}
  }
  if (payload.length !== CLIENT_ID_BYTES + V2_KEY_BYTES) return {error: `public key reply is ${payload.length} bytes, expected ${CLIENT_ID_BYTES + V2_KEY_BYTES}`}
  return {clientId: Buffer.from(payload.subarray(0, CLIENT_ID_BYTES)), publicKey: Buffer.from(payload.subarray(CLIENT_ID_BYTES))}
}

export interface UserEntry {
  clientId: Buffer
  name: string
}

export function encodeUserList(users: UserEntry[]): Buffer {
  const out = Buffer.alloc(users.length * LIST_ENTRY_BYTES)
  users.forEach((u, i) => {
    u.clientId.copy(out, i * LIST_ENTRY_BYTES)
    out.write(u.name, i * LIST_ENTRY_BYTES + CLIENT_ID_BYTES, 'latin1')
  })
  return out
}

export function decodeUserList(payload: Buffer): UserEntry[] | {error: string} {
  if (payload.length % LIST_ENTRY_BYTES !== 0) return {error: `user list of ${payload.length} bytes is not a multiple of ${LIST_ENTRY_BYTES}`}
  const out: UserEntry[] = []
  for (let off = 0; off < payload.length; off += LIST_ENTRY_BYTES) {
    const field = payload.subarray(off + CLIENT_ID_BYTES, off + LIST_ENTRY_BYTES)
    const nul = field.indexOf(0)
    out.push({clientId: Buffer.from(payload.subarray(off, off + CLIENT_ID_BYTES)), name: field.subarray(0, nul < 0 ? field.length : nul).toString('latin1')})
  }
  return out
}

export function encodeSendHeader(destination: Buffer, type: number, contentSize: number): Buffer {
  if (destination.length !== CLIENT_ID_BYTES) throw new Error('destination id must be 16 bytes')
  const b = Buffer.allocUnsafe(SEND_HEADER_BYTES)
  destination.copy(b, 0)
  b[16] = type
  b.writeUInt32LE(contentSize, 17)
  return b
}

export function decodeSendHeader(b: Buffer): {destination: Buffer; type: number; contentSize: number} {
  return {contentSize: b.readUInt32LE(17), destination: Buffer.from(b.subarray(0, CLIENT_ID_BYTES)), type: b[16]}
}

/** 2103/1003 payload: destination id 16 | message id 4. */
export function encodeSendAck(destination: Buffer, messageId: number): Buffer {
  if (destination.length !== CLIENT_ID_BYTES) throw new Error('destination id must be 16 bytes')
  const b = Buffer.allocUnsafe(CLIENT_ID_BYTES + 4)
  destination.copy(b, 0)
  b.writeUInt32LE(messageId >>> 0, CLIENT_ID_BYTES)
  return b
}

export function encodePullEntryHeader(sender: Buffer, messageId: number, type: number, size: number): Buffer {
  if (sender.length !== CLIENT_ID_BYTES) throw new Error('sender id must be 16 bytes')
  const b = Buffer.allocUnsafe(PULL_ENTRY_HEADER_BYTES)
  sender.copy(b, 0)
  b.writeUInt32LE(messageId >>> 0, 16)
  b[20] = type
  b.writeUInt32LE(size, 21)
  return b
}

export function decodePullEntryHeader(b: Buffer): {sender: Buffer; messageId: number; type: number; size: number} {
  return {messageId: b.readUInt32LE(16), sender: Buffer.from(b.subarray(0, CLIENT_ID_BYTES)), size: b.readUInt32LE(21), type: b[20]}
}

/** Length of a DER element from its header (for keys that arrive zero-padded in a fixed field). */
export function derLength(buf: Buffer): number | undefined {
  if (buf.length < 2 || buf[0] !== 0x30) return undefined
  const l = buf[1]
  if (l < 0x80) return 2 + l
  const n = l & 0x7f
  if (n === 0 || n > 3 || buf.length < 2 + n) return undefined
  let len = 0
  for (let i = 0; i < n; i++) len = len * 256 + buf[2 + i]
  return 2 + n + len
}
