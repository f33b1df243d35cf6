/**
 * The mq client library: one connection to the broker over mutual TLS speaking the native
 * protocol (docs/protocol.md). Used by the CLI, the worker and the bench. Requests carry an id and
 * resolve on the broker's OK (for publish: the confirm, sent only once the message is stored)
 * or reject with the broker's error as an MqError with the same code.
 */
import {EventEmitter} from 'node:events'
import net from 'node:net'
import tls from 'node:tls'

import {DataError, MqError, NotFoundError, PermissionError, TempFailError, UnavailableError, UsageError} from '../errors.js'
import {MessageIds} from '../wire/ids.js'
import type {BrokerDefinitions, BrokerStats, Delivery, MessageStatusInfo, PeekedMessage, QueueStats} from '../wire/types.js'
import {BATCH_BYTES, BATCH_HEADER_ARGS_MAX, BATCH_MAX_COUNT, BIG_BODY, type Frame, FrameError, FrameParser, NEWLINE, NO_HEADERS, PublishBatchWriter, eachDelivery, encodeFrame, encodeHead, encodeHeaderArgs, encodeLine, encodeValue, frameHeaders, frameHeadersOrNone, sameHeaders} from '../wire/protocol.js'

export type {BrokerDefinitions, BrokerStats, Delivery, MessageStatus, MessageStatusInfo, PeekedMessage, QueueStats} from '../wire/types.js'

export interface ConnectOptions {
  host: string
  port: number
  tls: tls.ConnectionOptions
  timeoutMs?: number
  /** plain TCP without TLS: only for tests against an in-process server */
  plain?: boolean
  /** the identity claimed in HELLO over plain TCP (ignored over TLS, where the certificate decides) */
  identity?: string
  /** heartbeat interval to propose to the broker */
  heartbeatMs?: number
  /**
   * Ask for batch confirms: one CONFIRM frame per commit instead of an OK per publish (faster);
   * message ids are then generated here and publish() results carry no `queues`.
   */
  batchConfirms?: boolean
  /** largest frame body accepted from the broker */
  maxPayload?: number
  /**
   * Batch frames (default true): small publishes of one tick to the same exchange and key (and the
   * same headers, where the broker announced batch_headers=1) leave as one PUBLISH_BATCH, and the
   * broker pushes deliveries as DELIVERS frames.
   */
  batch?: boolean
}

interface Pending {
  /** set on publishes awaiting a batch CONFIRM */
  messageId?: string
  resolve: (f: Frame) => void
  reject: (e: Error) => void
  deadline: number
  onOk?: (f: Frame) => void
}

type Args = Record<string, string | number | boolean | undefined>

/** a publish requestRaw may put into a PUBLISH_BATCH */
interface BatchablePublish {
  exchange: string
  routingKey: string
  /** pieces: a big body written piece by piece (never batched) */
  body: Buffer | readonly Buffer[]
  opts: {messageId?: string; headers?: Record<string, string>}
}

const EMPTY = Buffer.alloc(0)
/** publishNoConfirm's options when none are given: one shared object, not a fresh {} per publish (only read) */
const NO_OPTS: {messageId?: string; headers?: Record<string, string>} = Object.freeze({})
/** what a publish covered by a CONFIRM resolves with: the message id is the one publish() named */
const CONFIRMED: Frame = Object.freeze({args: Object.freeze({}) as Record<string, string>, body: EMPTY, id: 0, verb: 'OK'})
/** buffered output beyond which publishNoConfirm() asks the caller to await drained() */
const CLIENT_OUT_LIMIT = 1024 * 1024
/** the TLS read buffer (Receiver): a few TLS records at a time */
const RECV_BUFFER = 64 * 1024

const ERROR_CLASSES: Record<string, new (code: string, message: string, opts?: {hint?: string}) => MqError> = {
  E_CERT_REVOKED: PermissionError,
  E_FORBIDDEN: PermissionError,
  E_TLS_CLIENT_CERT: PermissionError,
  E_TOO_MANY_UNACKED: TempFailError,
  // the broker is full (broker.max_connections): retrying later may work
  E_TOO_MANY_CONNECTIONS: TempFailError,
  E_BAD_NAME: UsageError,
  // the same exit codes as the broker's own errors, whatever command meets them
  E_NOT_FOUND: NotFoundError,
  E_FRAME_TOO_LARGE: DataError,
}

function brokerError(f: Frame): MqError {
  const code = f.args.code ?? 'E_BROKER'
  const Cls = ERROR_CLASSES[code]
  const message = f.args.message ?? 'the broker reported an error'
  const hint = f.args.hint
  return Cls ? new Cls(code, message, {hint}) : new MqError(code, message, {hint})
}

const HEADER_NAME = /^[A-Za-z0-9_.:-]{1,128}$/

/** PUBLISH built by hand (hot path); header names are checked, values encoded. */
function publishFrame(id: number, exchange: string, routingKey: string, body: Buffer | readonly Buffer[], opts: {messageId?: string; headers?: Record<string, string>}): Buffer | Buffer[] {
  let line = 'PUBLISH ' + id + ' exchange=' + encodeValue(exchange) + ' key=' + encodeValue(routingKey)
  if (opts.messageId !== undefined) line += ' message_id=' + encodeValue(opts.messageId)
  if (opts.headers) {
    for (const k in opts.headers) {
      if (!HEADER_NAME.test(k)) throw new FrameError('E_FRAME_MALFORMED', `header name ${JSON.stringify(k)} is not allowed (letters, digits, _ . : - only)`, false)
      line += ' h.' + k + '=' + encodeValue(opts.headers[k])
    }
  }
  if (!Buffer.isBuffer(body)) return [encodeHead(line, piecesLength(body)), ...body]
  return body.length >= BIG_BODY ? [encodeHead(line, body.length), body] : encodeLine(line, body)
}

function piecesLength(pieces: readonly Buffer[]): number {
  let n = 0
  for (const b of pieces) n += b.length
  return n
}

/**
 * Decrypted bytes read into one reused buffer (tls.connect's onread) instead of a fresh buffer and a
 * 'data' event per TLS record: a 1 MiB body arrived as 64 allocations of 16 KiB, each kept until the
 * body was complete and then joined. Bytes read before the client attaches are copied and replayed.
 */
class Receiver {
  private sink: ((d: Buffer) => void) | undefined
  private early: Buffer[] = []
  readonly onread = {
    buffer: Buffer.allocUnsafe(RECV_BUFFER),
    callback: (n: number, buf: Buffer): boolean => {
      const d = buf.subarray(0, n)
      if (this.sink) this.sink(d)
      else this.early.push(Buffer.from(d))
      return true
    },
  }

  attach(sink: (d: Buffer) => void): void {
    this.sink = sink
    for (const d of this.early) sink(d)
    this.early = []
  }
}

export function deliveryFrom(f: Frame): Delivery {
  const a = f.args
  return {
    body: f.body,
    deliveryCount: Number(a.count ?? 1),
    deliveryTag: Number(a.tag),
    exchange: a.exchange ?? '',
    headers: frameHeaders(a),
    messageId: a.message_id ?? '',
    queue: a.queue ?? '',
    redelivered: a.redelivered === '1',
    routingKey: a.key ?? '',
    timestamp: Number(a.ts ?? 0),
  }
}

export class BrokerClient extends EventEmitter {
  private nextId = 1
  private readonly pending = new Map<number, Pending>()
  private readonly consumers = new Map<string, {queue: string; onMessage: (d: Delivery) => void}>()
  private readonly parser: FrameParser
  private out: Buffer[] = []
  private outLen = 0
  private flushScheduled = false
  /** the broker agreed to batch confirms (CONFIRM upto=N) */
  private batchConfirms = false
  /** delivery tags acked in this tick */
  private ackTags: number[] = []
  /** publish request ids in order, for CONFIRM upto=N */
  private pubIds: number[] = []
  private pubHead = 0
  private readonly ids = new MessageIds()
  /** the broker understands PUBLISH_BATCH */
  private batchPublish = false
  /** the broker takes PUBLISH_BATCH with h.* (headers shared by its records): HELLO batch_headers=1 */
  private batchHeaders = false
  /** the last headers batched (a copy: a caller may change its object) and their encoded h.* arguments */
  private hdrSnap: Record<string, string> | undefined
  private hdrArgs = ''
  /** the open batch's headers and their encoded arguments */
  private pbatchHeaders: Record<string, string> | undefined
  private pbatchHdrArgs = ''
  /** the open PUBLISH_BATCH: its exchange, key and request ids (0 = unconfirmed) */
  private readonly pbatch = new PublishBatchWriter()
  private pbatchExchange = ''
  private pbatchKey = ''
  private pbatchFirst = 0
  private pbatchLast = 0
  /** request id ranges sent as one PUBLISH_BATCH, by their last id (an ERR names the last) */
  private readonly batchFirstOf = new Map<number, number>()
  private closing = false
  private isClosed = false
  /** false until the first bytes from the server arrived */
  private answered = false
  private lastIn = Date.now()
  private timer: NodeJS.Timeout
  /** what the broker said in its HELLO reply */
  server: Record<string, string> = {}

  private constructor(
    private readonly sock: net.Socket,
    private readonly timeoutMs: number,
    maxPayload: number,
    recv?: Receiver,
  ) {
    super()
    // a TLS connection reads into one reused buffer (recv): the parser must then copy what it keeps
    this.parser = new FrameParser(maxPayload, {wholeBodies: recv !== undefined})
    sock.setNoDelay(true)
    if (recv) recv.attach((d) => this.onData(d))
    else sock.on('data', (d: Buffer) => this.onData(d))
    sock.on('error', (err) => this.shutdown(err))
    sock.on('close', () => this.shutdown())
    this.timer = setInterval(() => this.onTick(), 250)
    this.timer.unref()
  }

  get closed(): boolean {
    return this.isClosed
  }

  static async connect(opts: ConnectOptions): Promise<BrokerClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000
    const where = `${opts.host}:${opts.port}`
    const recv = opts.plain ? undefined : new Receiver()
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = opts.plain
        ? net.connect({host: opts.host, noDelay: true, port: opts.port})
        : // onread: documented for tls.connect (Node >= 14) though missing from its type
          tls.connect({...opts.tls, host: opts.host, onread: recv!.onread, port: opts.port, servername: net.isIP(opts.host) ? undefined : opts.host} as tls.ConnectionOptions)
      // Nagle off underneath TLS from the start: small frames must not wait for delayed ACKs
      if (!opts.plain) s.setNoDelay(true)
      const t = setTimeout(() => {
        s.destroy()
        // a listener that never completes the handshake: maybe busy, maybe the wrong thing; retrying may work (75),
        // unlike a refused connection (69)
        reject(new TempFailError('E_BROKER_TIMEOUT', `no answer from the broker at ${where} within ${timeoutMs} ms`, {hint: 'Try this: mq broker start, or check --broker HOST:PORT'}))
      }, timeoutMs)
      s.once(opts.plain ? 'connect' : 'secureConnect', () => {
        clearTimeout(t)
        resolve(s)
      })
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(t)
        if (/wrong version number|packet length too long|unknown protocol|http request/i.test(err.message)) {
          // a TLS client at a port that does not speak TLS: connectBroker names what is there
          reject(new UnavailableError('E_WRONG_SERVICE', `${where} does not speak TLS, so it is not the broker's messaging port`, {details: {port: opts.port, seen: 'plain'}, hint: 'Try this: --broker HOST:PORT with the broker\'s messaging port (broker.port)'}))
        } else if (err.code === 'ECONNREFUSED') {
          reject(new UnavailableError('E_BROKER_UNREACHABLE', `cannot connect to the broker at ${where}: connection refused`, {hint: 'Try this: mq broker start (or set --broker HOST:PORT / MQ_BROKER)'}))
        } else if (/certificate|self.signed|unable to verify|alert|handshake|SSL/i.test(err.message)) {
          reject(new PermissionError('E_TLS', `TLS with the broker at ${where} failed: ${err.message}`, {hint: 'Try this: check that the broker and your identity use the same CA (mq cert list) and your certificate is not revoked'}))
        } else {
          reject(new UnavailableError('E_BROKER_UNREACHABLE', `cannot connect to the broker at ${where}: ${err.message}`, {hint: 'Try this: mq broker start, or check --broker HOST:PORT'}))
        }
      })
    })
    const c = new BrokerClient(sock, timeoutMs, opts.maxPayload ?? 128 * 1024 * 1024, recv)
    try {
      const batch = opts.batch ?? true
      const ok = await c.request('HELLO', {batch: batch ? 1 : undefined, batch_headers: batch ? 1 : undefined, confirms: opts.batchConfirms ? 'batch' : undefined, heartbeat: opts.heartbeatMs, identity: opts.plain ? (opts.identity ?? 'anonymous') : undefined, version: 1})
      c.server = ok.args
      c.batchConfirms = ok.args.confirms === 'batch'
      c.batchPublish = batch && ok.args.batch === '1'
      // an older broker does not announce it (and would drop h.* on a PUBLISH_BATCH): headers then go per PUBLISH
      c.batchHeaders = c.batchPublish && ok.args.batch_headers === '1'
    } catch (error) {
      c.sock.destroy()
      if (error instanceof MqError && error.code === 'E_BROKER_CLOSED') {
        throw new PermissionError('E_TLS', `the broker at ${where} closed the connection during the handshake (certificate refused or revoked?)`, {hint: 'Try this: mq cert list, and issue a new client certificate if yours was revoked'})
      }
      throw error
    }
    return c
  }

  // ---- plumbing ----------------------------------------------------------------------------

  private onTick(): void {
    const now = Date.now()
    for (const [id, p] of this.pending) {
      if (p.deadline <= now) {
        this.pending.delete(id)
        p.reject(new TempFailError('E_BROKER_TIMEOUT', `the broker did not answer within ${this.timeoutMs} ms`, {hint: 'Try this: retry, or raise --timeout'}))
      }
    }
    const hb = Number(this.server.heartbeat ?? 0)
    if (hb > 0 && now - this.lastIn > hb * 3) this.shutdown(new UnavailableError('E_BROKER_GONE', `no heartbeat from the broker for ${hb * 3} ms`, {hint: 'Try this: check the broker is running'}))
  }

  private onData(d: Buffer): void {
    this.lastIn = Date.now()
    if (!this.answered) {
      this.answered = true
      // an HTTP server (the broker's API port, the proxy) answers our first line with an HTTP status line
      if (d.subarray(0, 5).toString('latin1') === 'HTTP/') {
        this.shutdown(new UnavailableError('E_WRONG_SERVICE', 'that port answered HTTP, so it is not the broker\'s messaging port', {details: {port: this.sock.remotePort, seen: 'http'}, hint: 'Try this: --broker HOST:PORT with the broker\'s messaging port (broker.port)'}))
        return
      }
    }
    try {
      this.parser.push(
        d,
        (f) => this.onFrame(f),
        (e) => this.emitError(new MqError(e.code, e.message)),
      )
    } catch (error) {
      if (error instanceof FrameError && Object.keys(this.server).length === 0) {
        // garbage before the HELLO answer: something else listens there
        this.shutdown(new UnavailableError('E_WRONG_SERVICE', `that port does not speak the mq protocol (${error.message})`, {details: {port: this.sock.remotePort, seen: 'other'}, hint: 'Try this: --broker HOST:PORT with the broker\'s messaging port (broker.port)'}))
        return
      }
      this.shutdown(error instanceof FrameError ? new MqError(error.code, `bad frame from the broker: ${error.message}`) : (error as Error))
    }
  }

  private onFrame(f: Frame): void {
    switch (f.verb) {
      case 'DELIVER': {
        const h = this.consumers.get(f.args.consumer ?? '')
        if (h) {
          const d = deliveryFrom(f)
          if (!d.queue) d.queue = h.queue
          h.onMessage(d)
        }
        return
      }
      case 'DELIVERS': {
        const h = this.consumers.get(f.args.consumer ?? '')
        if (!h) return
        const queue = h.queue
        // h.* on a DELIVERS line are every record's headers; each delivery gets its own copy to keep
        const shared = frameHeadersOrNone(f.args)
        if (shared === NO_HEADERS) {
          // no headers (the usual case): a fresh empty object per delivery, without a copy of an empty one
          eachDelivery(f.body, Number(f.args.count ?? 0), (tag, redelivered, count, ts, exchange, key, messageId, body) =>
            h.onMessage({body, deliveryCount: count, deliveryTag: tag, exchange, headers: {}, messageId, queue, redelivered, routingKey: key, timestamp: ts}),
          )
        } else {
          eachDelivery(f.body, Number(f.args.count ?? 0), (tag, redelivered, count, ts, exchange, key, messageId, body) =>
            h.onMessage({body, deliveryCount: count, deliveryTag: tag, exchange, headers: {...shared}, messageId, queue, redelivered, routingKey: key, timestamp: ts}),
          )
        }
        return
      }
      case 'OK':
      case 'ERR': {
        const first = this.batchFirstOf.get(f.id)
        if (first !== undefined) {
          // a PUBLISH_BATCH is taken or refused whole: its answer settles every publish in it
          this.batchFirstOf.delete(f.id)
          for (let id = first; id <= f.id; id++) {
            const p = this.pending.get(id)
            if (!p) continue
            this.pending.delete(id)
            if (f.verb === 'OK') p.resolve({args: {message_id: p.messageId ?? '', queues: f.args.queues ?? ''}, body: EMPTY, id, verb: 'OK'})
            else p.reject(brokerError(f))
          }
          return
        }
        const p = this.pending.get(f.id)
        if (!p) {
          // ERR 0 is about the connection itself (full, revoked, no certificate): it closes next
          if (f.verb === 'ERR' && f.id === 0) this.shutdown(brokerError(f))
          else if (f.verb === 'ERR') this.emitError(brokerError(f))
          return
        }
        this.pending.delete(f.id)
        if (f.verb === 'OK') {
          p.onOk?.(f)
          p.resolve(f)
        } else p.reject(brokerError(f))
        return
      }
      case 'CONFIRM': {
        // every publish up to `upto` that has not been answered by ERR is stored
        const upto = Number(f.args.upto ?? 0)
        while (this.pubHead < this.pubIds.length && this.pubIds[this.pubHead] <= upto) {
          const id = this.pubIds[this.pubHead++]
          const p = this.pending.get(id)
          if (!p) continue
          this.pending.delete(id)
          // one shared answer: publish() knows the id it named (no frame object per confirmed message)
          p.resolve(CONFIRMED)
        }
        for (const last of this.batchFirstOf.keys()) {
          if (last > upto) break
          this.batchFirstOf.delete(last)
        }
        if (this.pubHead > 4096 && this.pubHead * 2 > this.pubIds.length) {
          this.pubIds = this.pubIds.slice(this.pubHead)
          this.pubHead = 0
        }
        return
      }
      case 'PING':
        this.write(encodeFrame('PONG', f.id))
        return
      case 'CANCELLED':
        this.consumers.delete(f.args.consumer ?? '')
        this.emit('cancelled', f.args.consumer)
        return
      default:
    }
  }

  private emitError(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err)
  }

  private shutdown(err?: Error): void {
    if (this.isClosed) return
    this.isClosed = true
    clearInterval(this.timer)
    this.sock.destroy()
    const reason =
      err instanceof MqError
        ? err
        : new UnavailableError('E_BROKER_CLOSED', `the connection to the broker closed${err ? `: ${err.message}` : ''}`, {hint: 'Try this: check the broker is running and reconnect'})
    for (const p of this.pending.values()) p.reject(reason)
    this.pending.clear()
    if (err && !this.closing) this.emitError(reason)
    this.emit('close', err)
  }

  /** Every frame but coalesced acks: pending acks go first so the order of frames is kept. */
  private write(frame: Buffer | Buffer[]): boolean {
    if (this.ackTags.length > 0) this.flushAcks()
    return this.writeFrame(frame)
  }

  /** Frames written in one tick leave as one buffer (one TLS record batch, one syscall). */
  private writeFrame(frame: Buffer | Buffer[]): boolean {
    if (this.pbatch.count > 0) this.closeBatch()
    if (Array.isArray(frame)) {
      // a big frame: header, body and newline as they are, no copy of the body
      this.flush()
      this.sock.cork()
      for (const b of frame) this.sock.write(b)
      this.sock.write(NEWLINE)
      this.sock.uncork()
      return this.sock.writableLength < CLIENT_OUT_LIMIT
    }
    const buf = frame
    // a full batch goes out as it is: copying it into this tick's buffer would gain nothing
    if (buf.length >= BATCH_BYTES) {
      this.flush()
      this.sock.write(buf)
      return this.sock.writableLength < CLIENT_OUT_LIMIT
    }
    this.out.push(buf)
    this.outLen += buf.length
    if (!this.flushScheduled) {
      this.flushScheduled = true
      process.nextTick(this.flush)
    }
    return this.sock.writableLength + this.outLen < CLIENT_OUT_LIMIT
  }

  private readonly flush = (): void => {
    this.flushScheduled = false
    if (this.pbatch.count > 0) this.closeBatch()
    if (this.out.length === 0 || this.sock.destroyed) return
    this.sock.write(this.out.length === 1 ? this.out[0] : Buffer.concat(this.out, this.outLen))
    this.out = []
    this.outLen = 0
  }

  /**
   * Adds a publish to the open PUBLISH_BATCH (opening one if needed); false when it cannot be batched.
   * `id` 0 = unconfirmed; confirmed ones are consecutive request ids, so one CONFIRM or ERR settles them.
   */
  private batched(exchange: string, routingKey: string, body: Buffer | readonly Buffer[], opts: {messageId?: string; headers?: Record<string, string>}, id: number): boolean {
    if (!this.batchPublish || !Buffer.isBuffer(body) || body.length >= BIG_BODY) return false
    let hdrArgs = ''
    const headers = opts.headers
    if (headers) {
      if (this.hdrSnap === undefined || !sameHeaders(headers, this.hdrSnap)) {
        // other headers than last time: encoded (and their names checked) once, then reused while they repeat
        this.hdrArgs = encodeHeaderArgs(headers)
        this.hdrSnap = {...headers}
      }
      hdrArgs = this.hdrArgs
      if (hdrArgs !== '' && (!this.batchHeaders || hdrArgs.length > BATCH_HEADER_ARGS_MAX)) return false
    }
    const b = this.pbatch
    // records share their batch's headers: other headers close it (equal headers encode to the same string)
    if (b.count > 0 && (exchange !== this.pbatchExchange || routingKey !== this.pbatchKey || hdrArgs !== this.pbatchHdrArgs || (id === 0) !== (this.pbatchLast === 0) || b.bytes >= BATCH_BYTES || b.count >= BATCH_MAX_COUNT)) this.closeBatch()
    if (this.ackTags.length > 0) this.flushAcks()
    if (b.count === 0) {
      b.start(exchange, routingKey, hdrArgs)
      this.pbatchExchange = exchange
      this.pbatchKey = routingKey
      this.pbatchHdrArgs = hdrArgs
      this.pbatchHeaders = hdrArgs === '' ? undefined : this.hdrSnap
      this.pbatchFirst = id
    }
    if (!b.add(opts.messageId, body)) {
      if (b.count === 0) b.reset()
      return false
    }
    this.pbatchLast = id
    if (!this.flushScheduled) {
      this.flushScheduled = true
      process.nextTick(this.flush)
    }
    return true
  }

  private closeBatch(): void {
    const b = this.pbatch
    const id = this.pbatchLast
    if (b.count === 1) {
      // one message: a plain PUBLISH says the same in fewer bytes (and reads better in a trace)
      const rec = b.records()
      const idLen = rec.readUInt16BE(0)
      const messageId = idLen ? rec.toString('utf8', 2, 2 + idLen) : undefined
      const body = Buffer.from(rec.subarray(2 + idLen + 4))
      b.reset()
      this.writeFrame(publishFrame(id, this.pbatchExchange, this.pbatchKey, body, {headers: this.pbatchHeaders, messageId}))
      return
    }
    if (id !== 0) this.batchFirstOf.set(id, this.pbatchFirst)
    this.writeFrame(b.frame(id))
  }

  private request(verb: string, args?: Args, body?: Buffer, onOk?: (f: Frame) => void): Promise<Frame> {
    return this.requestRaw((id) => encodeFrame(verb, id, args, body), onOk)
  }

  /** UUID-shaped, unique: a random per-connection prefix and a counter */
  private newId(): string {
    return this.ids.next()
  }

  /** `publishMessageId`: the id a batched publish resolves with; `confirmed` = settled by CONFIRM upto= (batch confirms) */
  private requestRaw(frame: ((id: number) => Buffer | Buffer[]) | BatchablePublish, onOk?: (f: Frame) => void, publishMessageId?: string, confirmed = true): Promise<Frame> {
    if (this.isClosed) return Promise.reject(new UnavailableError('E_BROKER_CLOSED', 'the connection to the broker is closed', {hint: 'Try this: reconnect'}))
    const id = this.nextId++
    let buf: Buffer | Buffer[] | undefined
    try {
      if (typeof frame === 'function') buf = frame(id)
      else if (!this.batched(frame.exchange, frame.routingKey, frame.body, frame.opts, id)) buf = publishFrame(id, frame.exchange, frame.routingKey, frame.body, frame.opts)
    } catch (error) {
      return Promise.reject(error instanceof FrameError ? new UsageError(error.code, error.message, {hint: 'Try this: use header names of letters, digits, _ . : -'}) : error)
    }
    return new Promise<Frame>((resolve, reject) => {
      this.pending.set(id, {deadline: Date.now() + this.timeoutMs, messageId: publishMessageId, onOk, reject, resolve})
      if (publishMessageId !== undefined && confirmed) this.pubIds.push(id)
      if (buf) this.write(buf)
    })
  }

  private async json<T>(verb: string, args?: Args): Promise<T> {
    const f = await this.request(verb, args)
    return JSON.parse(f.body.toString('utf8')) as T
  }

  // ---- API ---------------------------------------------------------------------------------

  async declareQueue(name: string, opts: {durable?: boolean; deadLetter?: string; ttlMs?: number; maxLength?: number; exact?: boolean} = {}): Promise<void> {
    await this.request('DECLARE_QUEUE', {dead_letter: opts.deadLetter, durable: opts.durable, exact: opts.exact || undefined, max_length: opts.maxLength, name, ttl: opts.ttlMs})
  }

  async declareExchange(name: string, type: 'direct' | 'fanout' | 'topic', opts: {durable?: boolean} = {}): Promise<void> {
    await this.request('DECLARE_EXCHANGE', {durable: opts.durable, name, type})
  }

  async bind(queue: string, exchange: string, routingKey: string): Promise<void> {
    await this.request('BIND', {exchange, key: routingKey, queue})
  }

  async unbind(queue: string, exchange: string, routingKey: string): Promise<void> {
    await this.request('UNBIND', {exchange, key: routingKey, queue})
  }

  /** Deletes an exchange and its bindings; ifUnused: refused (E_IN_USE) while it has bindings. */
  async deleteExchange(name: string, opts: {ifUnused?: boolean} = {}): Promise<{bindings: number}> {
    const f = await this.request('DELETE_EXCHANGE', {if_unused: opts.ifUnused || undefined, name})
    return {bindings: Number(f.args.bindings ?? 0)}
  }

  /** Up to `count` messages from the head of a queue, left as they are (docs/protocol.md, PEEK). */
  async peek(queue: string, count = 1): Promise<{queue: string; ready: number; messages: PeekedMessage[]}> {
    return this.json('PEEK', {count, queue})
  }

  /** Exchanges, queues with their settings, bindings and the broker's permission rules (admin). */
  definitions(): Promise<BrokerDefinitions> {
    return this.json('DEFINITIONS')
  }

  async deleteQueue(name: string): Promise<{messages: number}> {
    const f = await this.request('DELETE_QUEUE', {name})
    return {messages: Number(f.args.messages ?? 0)}
  }

  async purgeQueue(name: string): Promise<{messages: number}> {
    const f = await this.request('PURGE_QUEUE', {name})
    return {messages: Number(f.args.messages ?? 0)}
  }

  listQueues(): Promise<QueueStats[]> {
    return this.json('LIST_QUEUES')
  }

  listExchanges(): Promise<{exchanges: {name: string; type: string; durable: boolean; bindings: number}[]; bindings: {exchange: string; queue: string; routingKey: string}[]}> {
    return this.json('LIST_EXCHANGES')
  }

  /**
   * Resolves on the broker's confirm: the message is stored (on disk, for durable queues).
   * `body` may be pieces (EnvelopeSealer.sealPieces): from BIG_BODY on they are written one after the
   * other as the frame's body, never joined into one buffer; smaller ones are joined and batched as usual.
   */
  async publish(exchange: string, routingKey: string, body: Buffer | readonly Buffer[], opts: {messageId?: string; headers?: Record<string, string>} = {}): Promise<{messageId: string; queues: string[]}> {
    if (!Buffer.isBuffer(body)) {
      const len = piecesLength(body)
      if (len < BIG_BODY) body = Buffer.concat(body, len)
    }
    if (this.batchConfirms) {
      // with batch confirms the CONFIRM frame carries no ids: we name the message ourselves
      const messageId = opts.messageId ?? this.newId()
      const f = await this.requestRaw({body, exchange, opts: {...opts, messageId}, routingKey}, undefined, messageId)
      return {messageId: f.args.message_id ?? messageId, queues: f.args.queues ? f.args.queues.split(',') : []}
    }
    if (opts.messageId) {
      // named by the caller (mq send names every message; an empty id stays a PUBLISH, refused as before): it can share a PUBLISH_BATCH, whose one OK
      // (sent once all of it is stored) settles each publish with its own id
      const f = await this.requestRaw({body, exchange, opts, routingKey}, undefined, opts.messageId, false)
      return {messageId: f.args.message_id || opts.messageId, queues: f.args.queues ? f.args.queues.split(',') : []}
    }
    const f = await this.requestRaw((id) => publishFrame(id, exchange, routingKey, body, opts))
    return {messageId: f.args.message_id ?? '', queues: f.args.queues ? f.args.queues.split(',') : []}
  }

  /**
   * Fire-and-forget publish: no confirm, so nothing guarantees it was stored; broker errors arrive
   * as 'error' events. Returns false when the socket buffer is full: await drained() before more.
   */
  publishNoConfirm(exchange: string, routingKey: string, body: Buffer, opts: {messageId?: string; headers?: Record<string, string>} = NO_OPTS): boolean {
    if (this.batched(exchange, routingKey, body, opts, 0)) return this.sock.writableLength + this.outLen + this.pbatch.bytes < CLIENT_OUT_LIMIT
    return this.write(publishFrame(0, exchange, routingKey, body, opts))
  }

  /** Resolves when the socket's write buffer has drained (or at once if it is not full). */
  drained(): Promise<void> {
    this.flush()
    if (!this.sock.writableNeedDrain || this.sock.writableLength < CLIENT_OUT_LIMIT / 2) return Promise.resolve()
    return new Promise((r) => {
      const done = () => {
        this.sock.off('close', done)
        this.sock.off('drain', done)
        r()
      }
      this.sock.once('drain', done)
      this.sock.once('close', done)
    })
  }

  async consume(queue: string, opts: {prefetch?: number; noAck?: boolean}, onMessage: (d: Delivery) => void): Promise<{consumerTag: string; cancel(): Promise<void>}> {
    // the handler is registered while the OK frame is processed, before any DELIVER behind it
    const f = await this.request('CONSUME', {no_ack: opts.noAck, prefetch: opts.prefetch, queue}, undefined, (ok) => this.consumers.set(ok.args.consumer ?? '', {onMessage, queue}))
    const consumerTag = f.args.consumer ?? ''
    return {
      cancel: async () => {
        await this.request('CANCEL', {consumer: consumerTag})
        this.consumers.delete(consumerTag)
      },
      consumerTag,
    }
  }

  async get(queue: string, opts: {noAck?: boolean} = {}): Promise<Delivery | null> {
    const f = await this.request('GET', {no_ack: opts.noAck, queue})
    if (f.args.empty === '1') return null
    return deliveryFrom(f)
  }

  /** Acks of one tick travel together as one `ACK 0 tags=1-40,42` frame. */
  ack(deliveryTag: number): void {
    this.ackTags.push(deliveryTag)
    if (this.ackTags.length === 1) process.nextTick(this.flushAcks)
  }

  private readonly flushAcks = (): void => {
    if (this.ackTags.length === 0) return
    const tags = this.ackTags
    this.ackTags = []
    let ranges = ''
    let i = 0
    while (i < tags.length) {
      let j = i
      while (j + 1 < tags.length && tags[j + 1] === tags[j] + 1) j++
      ranges += (ranges ? ',' : '') + (j > i ? `${tags[i]}-${tags[j]}` : `${tags[i]}`)
      i = j + 1
    }
    this.writeFrame(Buffer.from(`ACK 0 tags=${ranges}\n`))
  }

  /** An ack the broker answers: resolves once it has settled the delivery (redrive: nothing acked before it is sure). */
  async ackConfirmed(deliveryTag: number): Promise<void> {
    this.flushAcks()
    await this.request('ACK', {tag: deliveryTag})
  }

  nack(deliveryTag: number, requeue = true): void {
    this.write(encodeFrame('NACK', 0, {requeue, tag: deliveryTag}))
  }

  /** Rejects a delivery: it goes to the queue's dead-letter queue (or is dropped without one). */
  reject(deliveryTag: number, reason?: string): void {
    this.write(encodeFrame('REJECT', 0, {reason, tag: deliveryTag}))
  }

  messageStatus(messageId: string): Promise<MessageStatusInfo | null> {
    return this.json('STATUS', {message_id: messageId})
  }

  stats(): Promise<BrokerStats> {
    return this.json('STATS')
  }

  async putKey(name: string, encCertPem: string, signCertPem: string): Promise<void> {
    await this.request('PUT_KEY', {name}, Buffer.from(JSON.stringify({encCertPem, signCertPem})))
  }

  getKey(name: string): Promise<{encCertPem: string; signCertPem: string} | null> {
    return this.json('GET_KEY', {name})
  }

  async close(): Promise<void> {
    if (this.isClosed) return
    this.closing = true
    const done = new Promise<void>((r) => this.once('close', () => r()))
    this.request('QUIT').catch(() => {})
    const t = setTimeout(() => this.shutdown(), 2000)
    t.unref()
    await done
    clearTimeout(t)
  }
}
