/**
 * What `mq send` does once it has a broker connection and verified keys: turn payloads into
 * native envelopes, CipherMQ messages or (explicitly) plaintext, publish them with a bounded
 * window of unconfirmed messages, and report each confirm in input order.
 */
import type {KeyObject} from 'node:crypto'

import {MqError, UsageError, errorText} from '../errors.js'
import {encryptCipherMq} from './ciphermq.js'
import {EnvelopeSealer, type Recipient, type Signer} from './envelope.js'
import {Window} from '../util/window.js'
import {timeOrderedUuid} from '../wire/ids.js'
import {BIG_BODY} from '../wire/protocol.js'

export type SendFormat = 'native' | 'ciphermq' | 'plain'

/** Broker headers that describe an mq message; visible to the broker, so never secret. */
export const FORMAT_HEADER = 'mq-format'

/** The part of BrokerClient a sender needs. */
export interface Publisher {
  /**
   * `body` as pieces: a big envelope as sealed, written one piece after the other (BrokerClient.publish).
   * Resolves with the broker's confirm, after which nothing may read `body`: MessageSender seals later
   * messages into a confirmed big envelope's buffer.
   */
  publish(exchange: string, routingKey: string, body: Buffer | readonly Buffer[], opts?: {messageId?: string; headers?: Record<string, string>}): Promise<{messageId: string}>
}

export interface SendPlan {
  format: SendFormat
  exchange: string
  routingKey: string
  /** required for native */
  sender?: Signer
  /** required for native (1..256) and ciphermq (exactly 1) */
  recipients: (Recipient & {encPublicKey: KeyObject})[]
  /** user headers: authenticated inside a native envelope, and copied to the broker headers */
  headers?: Record<string, string>
  contentType?: string
  maxMessages?: number
  maxAgeMs?: number
  /** an envelope carries the signed grant every this many messages (see SealerOptions.grantEvery) */
  grantEvery?: number
  /** unconfirmed publishes in flight (default 256) */
  window?: number
}

export interface SendResult {
  message_id: string
  exchange: string
  routing_key: string
  format: SendFormat
  bytes: number
  envelope_bytes: number
  recipients: string[]
  sender: string | null
  key_id?: string
}

/** Builds message bodies for one destination and publishes them, keeping up to `window` unconfirmed. */
export class MessageSender {
  private readonly sealer?: EnvelopeSealer
  /** publishes not confirmed (or failed) yet */
  private readonly window: Window
  /** the same for every message of this sender (never changed after construction) */
  private readonly brokerHeaders: Readonly<Record<string, string>>
  /**
   * Envelope buffers of big messages whose publish the broker confirmed, to seal the next ones into: a
   * confirmed message's bytes were encrypted onto the connection before the broker could read them, so
   * nothing reads the buffer any more. Without them each 64 KiB message allocated a fresh buffer that stayed
   * alive until its confirm, long enough to be promoted, and only full (mark-compact) collections freed them.
   */
  private readonly spare: Buffer[] = []
  private spareBytes = 0

  constructor(
    private readonly client: Publisher,
    private readonly plan: SendPlan,
  ) {
    if (plan.format === 'native') {
      if (!plan.sender) throw new UsageError('E_NO_SENDER', 'An encrypted message needs a sender identity to sign it.', {hint: 'Try this: pass --identity NAME (or --from NAME) with keys from mq keygen NAME.'})
      this.sealer = new EnvelopeSealer({contentType: plan.contentType, grantEvery: plan.grantEvery, maxAgeMs: plan.maxAgeMs, maxMessages: plan.maxMessages, recipients: plan.recipients, sender: plan.sender})
    } else if (plan.format === 'ciphermq') {
      if (plan.recipients.length !== 1) throw new UsageError('E_CIPHERMQ_RECIPIENTS', 'The CipherMQ format has exactly one recipient.', {hint: 'Try this: pass a single --to NAME with --format ciphermq.'})
    } else if (plan.recipients.length > 0) {
      throw new UsageError('E_PLAIN_WITH_RECIPIENTS', '--plain cannot be combined with --to.', {hint: 'Try this: drop --plain to encrypt for the recipients.'})
    }
    this.window = new Window(Math.max(1, plan.window ?? 256))
    this.brokerHeaders = {...plan.headers, [FORMAT_HEADER]: plan.format}
  }

  /** data keys made so far (RSA wraps = keysCreated x recipients) */
  get keysCreated(): number {
    return this.sealer?.keysCreated ?? 0
  }

  /** Seals one payload into the body that goes on the wire (a big envelope as its pieces: see sealPieces). */
  build(payload: Buffer, into?: Buffer): {messageId: string; body: Buffer | readonly Buffer[]; bytes: number; keyId?: string; buffer?: Buffer} {
    if (this.sealer) {
      if (payload.length >= BIG_BODY) {
        const s = this.sealer.sealPieces(payload, {headers: this.plan.headers, into})
        return {body: s.pieces, buffer: s.buffer, bytes: s.length, keyId: s.keyId, messageId: s.messageId}
      }
      const s = this.sealer.seal(payload, {headers: this.plan.headers})
      return {body: s.envelope, bytes: s.envelope.length, keyId: s.keyId, messageId: s.messageId}
    }
    // time-ordered: a receiver's replay database is keyed by (sender, id), see timeOrderedUuid
    const messageId = timeOrderedUuid()
    if (this.plan.format === 'ciphermq') {
      const body = Buffer.from(JSON.stringify(encryptCipherMq(payload, this.plan.recipients[0].encPublicKey, messageId)))
      return {body, bytes: body.length, messageId}
    }
    return {body: payload, bytes: payload.length, messageId}
  }

  /**
   * Publishes one payload; `done` settles with the broker's confirm. Waits first while `window`
   * publishes are unconfirmed, so a long --lines input keeps memory bounded.
   */
  async enqueue(payload: Buffer): Promise<{messageId: string; done: Promise<SendResult>}> {
    await this.window.acquire()
    let into = payload.length >= BIG_BODY ? this.takeSpare() : undefined
    try {
      const {body, buffer: own, bytes, keyId, messageId} = this.build(payload, into)
      // `into` too short (a longer envelope), or not used (node:crypto): still free, and handed back once
      if (into && own !== into) this.putSpare(into)
      into = undefined
      const p = this.client.publish(this.plan.exchange, this.plan.routingKey, body, {headers: this.brokerHeaders, messageId}).then(
        (r): SendResult => ({
          bytes: payload.length,
          envelope_bytes: bytes,
          exchange: this.plan.exchange,
          format: this.plan.format,
          message_id: r.messageId ?? messageId,
          recipients: this.plan.recipients.map((x) => x.name),
          routing_key: this.plan.routingKey,
          sender: this.plan.format === 'native' ? (this.plan.sender?.name ?? null) : null,
          ...(keyId ? {key_id: keyId} : {}),
        }),
      )
      p.then(
        () => {
          // confirmed: the broker has every byte, so the buffer is free (a failed publish's may still be queued on the socket)
          if (own) this.putSpare(own)
          this.window.release()
        },
        this.window.release,
      )
      return {done: p, messageId}
    } catch (error) {
      // sealing or publishing refused it before anything was in flight: the slot is free again, and
      // `into` too when sealing failed (after that it is back already, or it holds this envelope)
      if (into) this.putSpare(into)
      this.window.release()
      throw error
    }
  }

  private takeSpare(): Buffer | undefined {
    const b = this.spare.pop()
    if (b) this.spareBytes -= b.length
    return b
  }

  /** keeps at most a window's worth of buffers, and at most 16 MiB */
  private putSpare(b: Buffer): void {
    if (this.spare.length >= this.window.size || this.spareBytes + b.length > SPARE_MAX_BYTES) return
    this.spare.push(b)
    this.spareBytes += b.length
  }
}

const SPARE_MAX_BYTES = 16 * 1024 * 1024

/** Splits input into lines for --lines: "\n" or "\r\n" separated; a final newline does not make an empty message. */
export function splitLines(input: Buffer): Buffer[] {
  const out: Buffer[] = []
  let start = 0
  for (let i = 0; i < input.length; i++) {
    if (input[i] === 0x0a) {
      const end = i > start && input[i - 1] === 0x0d ? i - 1 : i
      out.push(input.subarray(start, end))
      start = i + 1
    }
  }
  if (start < input.length) out.push(input.subarray(start))
  return out
}

/** Parses repeatable --header K:V flags. */
export function parseHeaders(values: string[] = []): Record<string, string> {
  const out: Record<string, string> = {}
  for (const v of values) {
    const i = v.indexOf(':')
    const k = i > 0 ? v.slice(0, i).trim() : ''
    if (!k || !/^[A-Za-z0-9._-]{1,128}$/.test(k)) {
      throw new UsageError('E_HEADER', `Header "${v}" is not KEY:VALUE with a key of letters, digits, . _ -.`, {hint: 'Try this: --header trace-id:abc123'})
    }
    if (k.toLowerCase().startsWith('mq-')) throw new UsageError('E_HEADER', `Header names starting with mq- are reserved (${k}).`, {hint: 'Try this: pick another header name.'})
    out[k] = v.slice(i + 1).trim()
  }
  return out
}

/** One payload's outcome, reported in input order. */
export type SendOutcome = {messageId: string; result: SendResult} | {messageId: string; error: unknown}

/**
 * Publishes every payload through the sender's window and reports each confirm (or failure) in
 * input order as it arrives. Stops enqueuing after the first failure; resolves once every
 * published payload has settled and been reported.
 */
export async function publishInOrder(messenger: MessageSender, payloads: Iterable<Buffer>, report: (o: SendOutcome) => void): Promise<{confirmed: number; total: number; failed?: unknown}> {
  const pending: Promise<SendResult>[] = []
  let failed: unknown
  let confirmed = 0
  let total = 0
  let chain = Promise.resolve()
  for (const payload of payloads) {
    total++
    if (failed) continue
    const {done, messageId} = await messenger.enqueue(payload)
    done.catch(() => {})
    pending.push(done)
    chain = chain.then(async () => {
      try {
        const result = await done
        confirmed++
        report({messageId, result})
      } catch (error) {
        failed ??= error
        report({error, messageId})
      }
    })
  }
  await Promise.allSettled(pending)
  await chain
  return {confirmed, failed, total}
}

/** The error `mq send` exits with when a message was not confirmed, with a hint for the common causes. */
export function sendFailure(failed: unknown, confirmed: number, total: number, queue?: string): MqError {
  const e = failed instanceof MqError ? failed : undefined
  const hint =
    e?.code === 'E_UNROUTABLE' && queue
      ? `Try this: create the queue first (mq queue declare ${queue}).`
      : e?.code === 'E_FRAME_TOO_LARGE'
        ? 'Try this: split the payload (an envelope adds up to about 750 B, plus 310 B per further recipient), or raise broker.max_payload on the broker.'
        : e?.hint
  return new MqError(e?.code ?? 'E_SEND_FAILED', `${confirmed} of ${total} message(s) confirmed; the first failure: ${errorText(failed)}`, {
    cause: failed,
    exit: e?.exit ?? 1,
    hint: hint ?? 'Try this: check the broker and resend the unconfirmed messages.',
  })
}
