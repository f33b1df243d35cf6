/**
 * What `mq recv` does with each delivery: recognise the format, refuse formats the caller did
 * not accept, open and verify, refuse replays, and shape the output records. Writing, acking and
 * dead-lettering stay in the command, in that order.
 */
import type {KeyObject} from 'node:crypto'
import {TextDecoder} from 'node:util'

import {DataError, MqError, PermissionError, TempFailError, UnavailableError} from '../errors.js'
import {formatDuration} from '../util/duration.js'
import {decryptCipherMq, isCipherMqBody} from './ciphermq.js'
import {EnvelopeOpener, type SenderResolver, isNativeEnvelope} from './envelope.js'
import type {IntentEntry, PriorAcceptance, ReplayGuard} from './replay.js'
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
  /** set when this delivery is a broker redelivery of an id this receiver took before (see replay.ts) */
  prior?: PriorAcceptance
}

export interface ReceiverOptions {
  identity: {name: string; encPrivateKey: KeyObject}
  resolveSender: SenderResolver
  replay: ReplayGuard | null
  accept: SendFormat[]
  cacheSize?: number
  /**
   * Each delivery's body is this receiver's alone (a broker client's delivery, which nothing else reads):
   * envelopes are opened in place, the payload decrypted over the body's ciphertext (EnvelopeOpener.open).
   * Leave it off when a body may be opened twice (the same buffer handed in again).
   */
  inPlace?: boolean
}

export class MessageReceiver {
  readonly opener: EnvelopeOpener
  private readonly accept: Set<SendFormat>
  /** accepted in this batch but not yet recorded: a duplicate inside one batch is a replay too */
  private readonly pending = new Map<string, IntentEntry>()

  constructor(private readonly opts: ReceiverOptions) {
    this.opener = new EnvelopeOpener({cacheSize: opts.cacheSize, grants: opts.replay ?? undefined, identity: opts.identity, resolveSender: opts.resolveSender})
    this.accept = new Set(opts.accept)
  }

  /** Detects the wire format from the body (the broker header is only a hint the broker could forge). */
  static detect(d: Inbound): SendFormat {
    if (isNativeEnvelope(d.body)) return 'native'
    if (d.headers[FORMAT_HEADER] === 'ciphermq' || isCipherMqBody(d.body)) return 'ciphermq'
    return 'plain'
  }

  /** Opens and verifies one delivery; throws an MqError (its code is the dead-letter reason). */
  async open(d: Inbound & {queue?: string; redelivered?: boolean}): Promise<Received> {
    const format = MessageReceiver.detect(d)
    if (!this.accept.has(format)) {
      throw new PermissionError('E_FORMAT_REFUSED', `Refused a ${format === 'plain' ? 'plaintext (or unrecognised)' : format} message: only ${[...this.accept].join(', ')} accepted.`, {
        hint: format === 'plain' ? 'Try this: if plaintext is expected, receive with --accept plain.' : `Try this: receive with --accept ${format} to allow it.`,
      })
    }
    let r: Received
    if (format === 'native') {
      const m = await this.opener.open(d.body, {inPlace: this.opts.inPlace})
      r = {content_type: m.contentType, format, headers: m.headers, message_id: m.messageId, payload: m.payload, recipients: m.recipients, sender: m.sender, timestamp: m.timestamp, verified: true}
    } else if (format === 'ciphermq') {
      const m = decryptCipherMq(d.body, this.opts.identity.encPrivateKey)
      r = {content_type: null, format, headers: stripMq(d.headers), message_id: m.messageId, payload: m.payload, recipients: [this.opts.identity.name], sender: null, timestamp: d.timestamp ?? Date.now(), verified: false}
    } else {
      r = {content_type: null, format, headers: stripMq(d.headers), message_id: d.messageId, payload: d.body, recipients: [], sender: null, timestamp: d.timestamp ?? Date.now(), verified: false}
    }
    // only a signed timestamp bounds the replay guard: ids older than the window are pruned
    if (r.verified && this.opts.replay?.tooOld(r.timestamp)) {
      const replay = this.opts.replay
      const days = (ms: number): string => `${Math.floor(ms / 86_400_000)} days`
      throw new PermissionError('E_REPLAY_WINDOW', `Refused message ${r.message_id} from ${r.sender}: signed ${new Date(r.timestamp).toISOString()}, ${days(replay.now() - r.timestamp)} ago, older than the replay window (${days(replay.windowMs)}), so it cannot be told from a replay.`, {
        hint: 'Try this: if such old messages are expected (a queue left unread), raise e2e.replay_window_ms; otherwise treat it as a replay.',
      })
    }
    const prior = this.pending.has(replayKey(r)) ? undefined : await this.opts.replay?.lookup(r.message_id, r.sender)
    // the broker handing back the very delivery this receiver took (its consumer stopped before the
    // ack): not a replay. Only the broker sets the redelivered flag; a republished copy has a new id.
    if (prior && d.redelivered && prior.delivery !== null && prior.delivery === deliveryKey(d)) return {...r, prior}
    if (this.pending.has(replayKey(r)) || prior) {
      throw new PermissionError('E_REPLAY', `Refused message ${r.message_id}${r.sender ? ` from ${r.sender}` : ''}: ${this.opts.identity.name} already accepted it (replay).`, {
        hint: 'Try this: nothing; a replayed message is dead-lettered, the original was delivered before.',
      })
    }
    return r
  }

  /** Call for each message of the batch about to be written; begin() records them before the writes, commit() after the flush. */
  accepted(r: Received, d: {queue?: string; messageId: string}): void {
    this.pending.set(replayKey(r), {delivery: deliveryKey(d), messageId: r.message_id, sender: r.sender, timestamp: r.verified ? r.timestamp : undefined})
  }

  /** Records the batch's ids as being written (intent), with where the output stands, before anything is written. */
  async begin(out?: {path?: string; offset?: number}): Promise<void> {
    if (this.pending.size > 0 && this.opts.replay) await this.opts.replay.begin([...this.pending.values()], out)
  }

  /** Marks every id of this batch written, in one transaction, before the acks. */
  async commit(): Promise<void> {
    if (this.pending.size === 0) return
    if (this.opts.replay) await this.opts.replay.markWritten([...this.pending.values()])
    this.pending.clear()
  }

  /** Forgets the batch (its writes failed; the deliveries go back to the queue). Their intents stay: a later delivery finds them in doubt. */
  discard(): void {
    this.pending.clear()
  }
}

const replayKey = (r: Received): string => `${r.sender ?? ''}\u0000${r.message_id}`
/** A broker delivery: its queue and the broker's message id (kept across redeliveries, new on every publish). */
const deliveryKey = (d: {queue?: string; messageId: string}): string => `${d.queue ?? ''}\u0000${d.messageId}`

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

/** Durations follow the CLI's one rule (a bare number is refused); kept here for existing importers. */
export {parseDuration} from '../util/duration.js'

/**
 * Codes that are a verdict on the message itself: only these reject it (to the dead-letter queue).
 * Anything else (the broker's key directory unreachable or failing, E_KEY_DIRECTORY; a local key
 * file that cannot be read, E_KEY_READ; a missing CA certificate or an unreadable CRL; an
 * unexpected error) says nothing about the message, so it goes back to the queue and recv stops
 * with 75. A message that fails that way on every delivery is still dead-lettered by the broker
 * once broker.delivery_limit is reached, so it cannot block a queue forever.
 */
const DEFINITIVE = new Set([
  'E_FORMAT_REFUSED', // a format the receiver does not accept
  'E_BAD_NAME', // a sender or recipient name in the message that no identity can have
  'E_REPLAY', // already accepted once
  'E_REPLAY_WINDOW', // authenticated timestamp older than e2e.replay_window_ms
  'E_SENDER_KEY_MISMATCH', // signed with a key that is not the sender's certified one
  'E_IDENTITY_UNTRUSTED', // sender certificate not issued by our CA to that name
  'E_IDENTITY_REVOKED',
  'E_IDENTITY_EXPIRED',
  'E_IDENTITY_NAME', // the envelope names a sender that cannot be an identity
  'E_RECIPIENT_UNKNOWN', // the directory answered: no such sender
])

/** True when err proves the message bad (reject it); false when checking it failed (requeue it). */
export function isDefinitiveRejection(err: unknown): boolean {
  if (!(err instanceof MqError)) return false
  return DEFINITIVE.has(err.code) || err.code.startsWith('E_ENVELOPE_') || err.code.startsWith('E_CIPHERMQ_')
}

export function reasonOf(err: unknown): string {
  if (err instanceof MqError) return `${err.code}: ${err.message}`
  return `E_INTERNAL: ${(err as Error)?.message ?? String(err)}`
}

/** How long a delivery may wait for the grant it refers to (senders repeat a grant every second). */
const GRANT_WAIT_MS = 5000

/** The part of a broker Delivery the receive loop needs. */
export interface LoopDelivery extends Inbound {
  deliveryTag: number
  redelivered?: boolean
  queue?: string
}

/** The part of BrokerClient the receive loop needs. */
export interface ConsumerClient<D extends LoopDelivery> {
  consume(queue: string, opts: {prefetch?: number}, onMessage: (d: D) => void): Promise<{cancel(): Promise<void>}>
  ack(tag: number): void
  nack(tag: number, requeue?: boolean): void
  reject(tag: number, reason?: string): void
  once(event: 'close', cb: (err?: Error) => void): unknown
  off(event: 'close', cb: (err?: Error) => void): unknown
}

/** Where accepted messages go; flush() resolves once everything written is durable enough to ack. */
export interface ReceiveSink<D extends LoopDelivery> {
  write(r: Received, d: D): void
  flush(): Promise<void>
  /** where the output stands before a batch (an --out file and its size), recorded with the intents */
  position?(): {path?: string; offset?: number}
  /**
   * A message whose earlier write was interrupted (intent recorded, not marked written): is it in the
   * output? 'written', 'absent' (write it now; a torn last line has been cut off), or 'unknown'
   * (stdout: the bytes are gone from our reach).
   */
  recover?(r: Received, prior: PriorAcceptance): 'written' | 'absent' | 'unknown'
}

export interface LoopOptions<D extends LoopDelivery> {
  queue: string
  /** stop after this many accepted messages; undefined = until stopped */
  count?: number
  /** stop when no message arrived for this long */
  idleTimeoutMs?: number
  prefetch: number
  /** messages handled per write+commit+ack round (default 256) */
  batch?: number
  signal?: AbortSignal
  onReject?: (d: D, err: unknown) => void
  /** a delivery that could not be checked now (temporary failure); it goes back to the queue */
  onDefer?: (d: D, err: unknown) => void
}

export interface LoopResult {
  accepted: number
  rejected: number
  /** redeliveries of messages this receiver had already written: acked, not written again */
  duplicates: number
  /** deliveries returned to the queue after a temporary failure */
  deferred: number
  stoppedBy: 'count' | 'timeout' | 'signal' | 'tempfail'
}

/**
 * Consumes a queue: open+verify each delivery, write the good ones, flush, persist their ids
 * (replay guard), then ack; reject the bad ones to the dead-letter queue with the reason. A
 * delivery that could not be checked (temporary failure, see isDefinitiveRejection) is held, the
 * batch in hand is finished, and the loop stops with 'tempfail'; the held deliveries are nacked
 * with requeue only after the consumer is cancelled, so the broker does not hand them straight
 * back to this loop. On stop, deliveries not yet handled go back to the queue.
 */
export async function receiveLoop<D extends LoopDelivery>(client: ConsumerClient<D>, receiver: MessageReceiver, sink: ReceiveSink<D>, opts: LoopOptions<D>): Promise<LoopResult> {
  const buf: D[] = []
  let wake: (() => void) | undefined
  const notify = (): void => {
    const w = wake
    wake = undefined
    w?.()
  }
  let lastArrival = Date.now()
  let stopped = false
  let closedErr: Error | undefined
  let closed = false
  const onClose = (err?: Error): void => {
    closed = true
    closedErr = err
    notify()
  }
  client.once('close', onClose)
  opts.signal?.addEventListener('abort', notify)
  const consumer = await client.consume(opts.queue, {prefetch: opts.prefetch}, (d) => {
    if (stopped) {
      client.nack(d.deliveryTag, true)
      return
    }
    buf.push(d)
    lastArrival = Date.now()
    notify()
  })
  let accepted = 0
  let rejected = 0
  let duplicates = 0
  const held: D[] = []
  // deliveries that name a grant this receiver has not seen (an MQE2/MQE3 reference): kept unacked while the
  // stream may still bring it (senders repeat it every second), retried whenever a new grant is learned
  const waiting = new Map<D, number>()
  let learned = receiver.opener.grantsLearned
  const giveUp = (now: number): void => {
    for (const [d, since] of waiting) {
      if (now - since < GRANT_WAIT_MS) continue
      waiting.delete(d)
      held.push(d)
      opts.onDefer?.(d, new TempFailError('E_GRANT_UNKNOWN', `Message ${d.messageId} refers to a key grant this receiver has not seen, and none arrived within ${GRANT_WAIT_MS / 1000} s.`, {hint: 'Try this: run mq recv again; the message was not rejected.'}))
    }
  }
  let stoppedBy: LoopResult['stoppedBy'] = 'count'
  const batch = Math.max(1, opts.batch ?? 256)
  /** this batch already waited for the rest of the I/O turn */
  let coalesced = false
  try {
    for (;;) {
      if (opts.count !== undefined && accepted >= opts.count) {
        stoppedBy = 'count'
        break
      }
      if (opts.signal?.aborted) {
        stoppedBy = 'signal'
        break
      }
      if (closed) {
        throw new UnavailableError('E_BROKER_CLOSED', `The broker connection closed${closedErr ? `: ${closedErr.message}` : ''}.`, {
          cause: closedErr,
          hint: 'Try this: check the broker and run mq recv again; unacked messages stay queued.',
        })
      }
      if (buf.length === 0) {
        let timer: NodeJS.Timeout | undefined
        let left = Number.POSITIVE_INFINITY
        if (opts.idleTimeoutMs !== undefined) {
          left = opts.idleTimeoutMs - (Date.now() - lastArrival)
          if (left <= 0) {
            // nothing more will bring the grants still missing
            for (const d of waiting.keys()) {
              held.push(d)
              opts.onDefer?.(d, new TempFailError('E_GRANT_UNKNOWN', `Message ${d.messageId} refers to a key grant this receiver has not seen.`, {hint: 'Try this: run mq recv again; the message was not rejected.'}))
            }
            waiting.clear()
            stoppedBy = held.length > 0 ? 'tempfail' : 'timeout'
            break
          }
        }
        if (waiting.size > 0) {
          const now = Date.now()
          giveUp(now)
          if (held.length > 0) {
            stoppedBy = 'tempfail'
            break
          }
          left = Math.min(left, GRANT_WAIT_MS - (now - Math.min(...waiting.values())))
        }
        if (left !== Number.POSITIVE_INFINITY) timer = setTimeout(notify, Math.max(1, left))
        await new Promise<void>((r) => {
          wake = r
        })
        if (timer) clearTimeout(timer)
        continue
      }
      const want = opts.count === undefined ? batch : Math.min(batch, opts.count - accepted)
      // A socket read that brings several TLS records hands them over one by one, and this loop
      // wakes after the first: without waiting for the rest of this I/O turn (setImmediate runs
      // after it) a batch would be one record's deliveries (about 6 envelopes of 2 KB), and each
      // batch pays two replay-database transactions, a flush and an ack frame. One turn, not a timer:
      // no added latency when nothing else is pending.
      if (buf.length < want && !coalesced) {
        coalesced = true
        await new Promise<void>((r) => setImmediate(r))
        continue
      }
      coalesced = false
      const take = buf.splice(0, Math.min(want, buf.length))
      const toWrite: [Received, D][] = []
      const dups: D[] = []
      const refuse = (d: D, error: unknown): void => {
        client.reject(d.deliveryTag, reasonOf(error).slice(0, 500))
        rejected++
        opts.onReject?.(d, error)
      }
      for (const d of take) {
        let r: Received
        const since = waiting.get(d)
        waiting.delete(d)
        try {
          r = await receiver.open(d)
        } catch (error) {
          if (error instanceof MqError && error.code === 'E_GRANT_UNKNOWN') {
            waiting.set(d, since ?? Date.now())
            continue
          }
          if (!isDefinitiveRejection(error)) {
            held.push(d)
            opts.onDefer?.(d, error)
            continue
          }
          refuse(d, error)
          continue
        }
        if (r.prior) {
          // a redelivery of a message this receiver took: written already, or its write was interrupted
          const found = r.prior.state === 1 ? 'written' : (sink.recover?.(r, r.prior) ?? 'unknown')
          if (found === 'written') {
            receiver.accepted(r, d)
            dups.push(d)
            continue
          }
          if (found === 'unknown') {
            refuse(d, new MqError('E_RECV_IN_DOUBT', `Message ${r.message_id} was being written to stdout when an earlier mq recv stopped; it may or may not have been written, so it is set aside rather than written twice.`, {hint: "Try this: check the earlier output for this message id; the message is in the queue's dead-letter queue."}))
            continue
          }
        }
        receiver.accepted(r, d)
        toWrite.push([r, d])
      }
      // intent first: a crash between here and commit() leaves ids in doubt, never written twice unnoticed
      await receiver.begin(sink.position?.())
      try {
        for (const [r, d] of toWrite) sink.write(r, d)
        await sink.flush()
      } catch (error) {
        receiver.discard()
        for (const [, d] of toWrite) client.nack(d.deliveryTag, true)
        for (const d of dups) client.nack(d.deliveryTag, true)
        throw error
      }
      await receiver.commit()
      for (const [, d] of toWrite) client.ack(d.deliveryTag)
      for (const d of dups) client.ack(d.deliveryTag)
      accepted += toWrite.length
      duplicates += dups.length
      if (waiting.size > 0) {
        if (receiver.opener.grantsLearned === learned) giveUp(Date.now())
        // a grant arrived: the waiting deliveries go first in the next batch
        else buf.unshift(...waiting.keys())
      }
      learned = receiver.opener.grantsLearned
      if (held.length > 0) {
        stoppedBy = 'tempfail'
        break
      }
    }
  } finally {
    stopped = true
    client.off('close', onClose)
    opts.signal?.removeEventListener('abort', notify)
    if (!closed) await consumer.cancel().catch(() => {})
    // (a closed connection returns its unacked deliveries to the queue by itself)
    for (const d of [...held, ...new Set([...waiting.keys(), ...buf.splice(0)])]) if (!closed) client.nack(d.deliveryTag, true)
  }
  return {accepted, deferred: held.length, duplicates, rejected, stoppedBy}
}

/**
 * What `mq recv` makes of a finished loop: a note on stderr for rejected messages, then the exit
 * it owes the caller (75 for deferred, timed-out or incomplete, 65 when only rejects arrived).
 */
export function recvOutcome(result: LoopResult, opts: {queue: string; count?: number; timeoutMs?: number}, note: (line: string) => void): void {
  const {queue, count} = opts
  if (result.rejected > 0) note(`mq recv: ${result.accepted} message(s) accepted, ${result.rejected} rejected (dead-lettered)`)
  if (result.duplicates > 0) note(`mq recv: ${result.duplicates} redelivered message(s) had been written by an earlier run and were acked, not written again`)
  if (result.deferred > 0) {
    throw new TempFailError('E_RECV_TEMPFAIL', `${result.deferred} message(s) could not be checked now and went back to ${queue} (requeued, not rejected); ${result.accepted} accepted.`, {
      hint: 'Try this: fix the cause reported above and run mq recv again; the messages are still queued.',
    })
  }
  if (result.stoppedBy === 'timeout' && result.accepted === 0) {
    if (result.rejected > 0) throw new DataError('E_RECV_REJECTED', `Only rejected messages arrived on ${queue} (${result.rejected}).`, {hint: "Try this: see the reasons above; the messages went to the queue's dead-letter queue, if it has one."})
    throw new TempFailError('E_RECV_TIMEOUT', `No message arrived on ${queue} within ${formatDuration(opts.timeoutMs ?? 0)}.`, {hint: 'Try this: a longer --timeout, or check that senders publish to this queue.'})
  }
  if (count !== undefined && result.accepted < count) {
    throw new TempFailError('E_RECV_INCOMPLETE', `Received ${result.accepted} of ${count} message(s) from ${queue} before ${result.stoppedBy === 'signal' ? 'being interrupted' : 'the timeout'}.`, {
      hint: 'Try this: run mq recv again for the rest; nothing unacked was lost.',
    })
  }
}
