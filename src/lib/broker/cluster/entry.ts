/**
 * How a message sits in a queue's stream entry (cluster mode).
 *
 * Current layout: the message is ONE binary field `p` (see packInto); the queue's own state about it
 * stays in small fields the Lua scripts read and rewrite: `x` expiry (ms, absent: none), `d`
 * deliveries before this entry was written (absent: 0), `r` redelivered (absent: no). One field
 * instead of nine is what makes a publish cheap for the node: a publish run sends a whole batch as
 * one argument, not ten per message (ioredis builds and copies every argument separately).
 *
 * Older layout, still read (entries written before it are in Redis): fields m message id,
 * e exchange, k routing key, h headers JSON, b body, t timestamp, plus x, d, r as above.
 *
 * The packed value, big-endian:
 *   u8  layout version (1)
 *   f64 timestamp (ms since the epoch)
 *   u32 length + message id (UTF-8)       the scripts read it at byte 10 (Lua: struct.unpack('>I4c0', p, 10))
 *   u32 length + exchange (UTF-8)
 *   u32 length + routing key (UTF-8)
 *   u32 length + headers JSON (length 0: no headers)
 *   body: the rest
 */
import {MqError} from '../../errors.js'
import {NO_HEADERS} from '../../wire/protocol.js'
import type {Message} from '../message.js'

export const PACKED_FIELD = 'p'
export const PACKED_VERSION = 1
const EMPTY = Buffer.alloc(0)
/** version, timestamp and four lengths */
const FIXED = 1 + 8 + 4 * 4

/** a stream entry as XRANGE/XREADGROUP return it with binary replies: id, flat field/value list */
export type RawEntry = [Buffer, Buffer[]]

function hasHeaders(h: Record<string, string>): boolean {
  if (h === NO_HEADERS) return false
  for (const _ in h) return true
  return false
}

/** the headers JSON of a message, or undefined when it has none */
export function headersJson(m: Message): string | undefined {
  return hasHeaders(m.headers) ? JSON.stringify(m.headers) : undefined
}

/** at least the bytes packInto writes for `m` (strings counted at 3 bytes per UTF-16 unit, the UTF-8 worst case) */
export function packedBound(m: Message, headers: string | undefined): number {
  return FIXED + 3 * (m.messageId.length + m.exchange.length + m.routingKey.length + (headers?.length ?? 0)) + m.body.length
}

function putString(buf: Buffer, off: number, s: string): number {
  const n = s.length === 0 ? 0 : buf.write(s, off + 4, 'utf8')
  buf.writeUInt32BE(n, off)
  return off + 4 + n
}

/** Writes the packed value of `m` at `off` of `buf` (room: packedBound); returns the offset after it. */
export function packInto(buf: Buffer, off: number, m: Message, headers: string | undefined): number {
  buf[off] = PACKED_VERSION
  buf.writeDoubleBE(m.timestamp, off + 1)
  let o = putString(buf, off + 9, m.messageId)
  o = putString(buf, o, m.exchange)
  o = putString(buf, o, m.routingKey)
  o = putString(buf, o, headers ?? '')
  o += m.body.copy(buf, o)
  return o
}

/** The packed value of one message (tests, and any single write). */
export function packMessage(m: Message): Buffer {
  const h = headersJson(m)
  const buf = Buffer.allocUnsafe(packedBound(m, h))
  return buf.subarray(0, packInto(buf, 0, m, h))
}

function malformed(what: string): never {
  throw new MqError('E_CLUSTER_ENTRY', `a queue entry in Redis is malformed (${what}): it was not written by mq`, {hint: 'Try this: mq queue purge the queue, and keep other writers off the cluster\'s keys'})
}

/** Fills `msg` from a packed value. */
function unpackInto(p: Buffer, msg: Message): void {
  if (p.length < FIXED || p[0] !== PACKED_VERSION) malformed(p.length < FIXED ? 'too short' : `layout version ${p[0]}`)
  msg.timestamp = p.readDoubleBE(1)
  let o = 9
  const next = (): string => {
    if (o + 4 > p.length) malformed('truncated')
    const n = p.readUInt32BE(o)
    const end = o + 4 + n
    if (end > p.length) malformed('truncated')
    const s = n === 0 ? '' : p.toString('utf8', o + 4, end)
    o = end
    return s
  }
  msg.messageId = next()
  msg.exchange = next()
  msg.routingKey = next()
  const h = next()
  if (h !== '') msg.headers = JSON.parse(h) as Record<string, string>
  msg.body = p.subarray(o)
}

/** A stream entry's message, in either layout (the delivery count and flags as stored; seq 0). */
export function entryMessage(fields: Buffer[]): Message {
  const msg: Message = {body: EMPTY, deliveryCount: 0, exchange: '', expiresAt: 0, headers: NO_HEADERS as Record<string, string>, messageId: '', redelivered: false, routingKey: '', seq: 0, timestamp: 0, idHash1: 0, idHash2: 0}
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = fields[i]
    const v = fields[i + 1]
    // field names are one byte in both layouts
    switch (name.length === 1 ? name[0] : 0) {
      case 0x70: // p: the current layout
        unpackInto(v, msg)
        break
      case 0x78: // x
        msg.expiresAt = Number(v.toString('latin1'))
        break
      case 0x64: // d
        msg.deliveryCount = Number(v.toString('latin1'))
        break
      case 0x72: // r
        msg.redelivered = v.length === 1 && v[0] === 0x31
        break
      // the older layout
      case 0x6d: // m
        msg.messageId = v.toString()
        break
      case 0x65: // e
        msg.exchange = v.toString()
        break
      case 0x6b: // k
        msg.routingKey = v.toString()
        break
      case 0x68: // h
        msg.headers = JSON.parse(v.toString()) as Record<string, string>
        break
      case 0x62: // b
        msg.body = v
        break
      case 0x74: // t
        msg.timestamp = Number(v.toString('latin1'))
        break
    }
  }
  return msg
}
