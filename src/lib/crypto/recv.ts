/**
 * What `mq recv` does with each delivery: recognise the format, refuse formats the caller did
 * not accept, open and verify, refuse replays, and shape the output records. Writing, acking and
 * dead-lettering stay in the command, in that order.
 */
import type {KeyObject} from 'node:crypto'
import {TextDecoder} from 'node:util'

import {MqError, PermissionError, UsageError} from '../errors.js'
import {decryptCipherMq, isCipherMqBody} from './ciphermq.js'
import {EnvelopeOpener, type SenderResolver, isNativeEnvelope} from './envelope.js'
import type {ReplayGuard} from './replay.js'
import {FORMAT_HEADER, type SendFormat} from './send.js'

/** The part of a broker Delivery a receiver reads. */
export interface Inbound {
  messageId: string
  body: Buffer
  headers: Record<string, string>
  timestamp?: number
}

export interface Received {
  message_id: string
  format: SendFormat
  sender: string | null
  verified: boolean
  /** ms since the epoch: the sender's signed timestamp (native) or the broker's */
  timestamp: number
  recipients: string[]
  content_type: string | null
  headers: Record<string, string>
  payload: Buffer
}

export interface ReceiverOptions {
  identity: {name: string; encPrivateKey: KeyObject}
  resolveSender: SenderResolver
  replay: ReplayGuard | null
  accept: SendFormat[]
  cacheSize?: number
}

export class MessageReceiver {
  readonly opener: EnvelopeOpener
  private readonly accept: Set<SendFormat>

  constructor(private readonly opts: ReceiverOptions) {
    this.opener = new EnvelopeOpener({cacheSize: opts.cacheSize, identity: opts.identity, resolveSender: opts.resolveSender})
    this.accept = new Set(opts.accept)
  }

  /** Detects the wire format from the body (the broker header is only a hint the broker could forge). */
  static detect(d: Inbound): SendFormat {
    if (isNativeEnvelope(d.body)) return 'native'
    if (d.headers[FORMAT_HEADER] === 'ciphermq' || isCipherMqBody(d.body)) return 'ciphermq'
    return 'plain'
  }

  /** Opens and verifies one delivery; throws an MqError (its code is the dead-letter reason). */
  async open(d: Inbound): Promise<Received> {
    const format = MessageReceiver.detect(d)
    if (!this.accept.has(format)) {
      throw new PermissionError('E_FORMAT_REFUSED', `Refused a ${format === 'plain' ? 'plaintext (or unrecognised)' : format} message: only ${[...this.accept].join(', ')} accepted.`, {
        hint: format === 'plain' ? 'Try this: if plaintext is expected, receive with --accept plain.' : `Try this: receive with --accept ${format} to allow it.`,
      })
    }
    let r: Received
    if (format === 'native') {
      const m = await this.opener.open(d.body)
      r = {content_type: m.contentType, format, headers: m.headers, message_id: m.messageId, payload: m.payload, recipients: m.recipients, sender: m.sender, timestamp: m.timestamp, verified: true}
    } else if (format === 'ciphermq') {
      const m = decryptCipherMq(d.body, this.opts.identity.encPrivateKey)
      r = {content_type: null, format, headers: stripMq(d.headers), message_id: m.messageId, payload: m.payload, recipients: [this.opts.identity.name], sender: null, timestamp: d.timestamp ?? Date.now(), verified: false}
    } else {
      r = {content_type: null, format, headers: stripMq(d.headers), message_id: d.messageId, payload: d.body, recipients: [], sender: null, timestamp: d.timestamp ?? Date.now(), verified: false}
    }
    if (this.opts.replay && (await this.opts.replay.seen(r.message_id, r.sender))) {
      throw new PermissionError('E_REPLAY', `Refused message ${r.message_id}${r.sender ? ` from ${r.sender}` : ''}: ${this.opts.identity.name} already accepted it (replay).`, {
        hint: 'Try this: nothing; a replayed message is dead-lettered, the original was delivered before.',
      })
    }
    return r
  }

  /** Call after the message was written out, before acking it. */
  async accepted(r: Received): Promise<void> {
    if (this.opts.replay) await this.opts.replay.record(r.message_id, r.sender)
  }
}

function stripMq(h: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(h)) if (!k.toLowerCase().startsWith('mq-')) out[k] = v
  return out
}

const utf8 = new TextDecoder('utf-8', {fatal: true})

/** The payload as UTF-8 when it is valid UTF-8, else base64. */
export function payloadText(payload: Buffer): {text: string; encoding: 'utf8' | 'base64'} {
  try {
    return {encoding: 'utf8', text: utf8.decode(payload)}
  } catch {
    return {encoding: 'base64', text: payload.toString('base64')}
  }
}

/** One line of `mq recv --json`. */
export function jsonRecord(r: Received, extra: {queue?: string; redelivered?: boolean} = {}): Record<string, unknown> {
  const p = payloadText(r.payload)
  return {
    message_id: r.message_id,
    sender: r.sender,
    verified: r.verified,
    format: r.format,
    timestamp: new Date(r.timestamp).toISOString(),
    recipients: r.recipients,
    content_type: r.content_type,
    headers: r.headers,
    payload: p.text,
    payload_encoding: p.encoding,
    ...extra,
  }
}

/** One line of `mq recv --out FILE`: the CipherMQ Receiver's stored record. */
export function outRecord(r: Received, receivedAt = new Date()): Record<string, unknown> {
  const p = payloadText(r.payload)
  return {message_id: r.message_id, message: p.text, timestamp: receivedAt.toISOString(), ...(p.encoding === 'base64' ? {encoding: 'base64'} : {})}
}

/** "500ms", "10s", "2m", "1h", "1.5s" or a bare number of seconds -> ms. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text)
  if (!m) throw new UsageError('E_DURATION', `"${text}" is not a duration.`, {hint: 'Try this: 500ms, 10s, 2m or 1h.'})
  const n = Number(m[1])
  const unit = m[2] ?? 's'
  return Math.round(n * (unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000))
}

export function reasonOf(err: unknown): string {
  if (err instanceof MqError) return `${err.code}: ${err.message}`
  return `E_INTERNAL: ${(err as Error)?.message ?? String(err)}`
}
