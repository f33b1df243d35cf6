/**
 * The native protocol server (docs/protocol.md) over mutual TLS (plain TCP only for unit tests).
 * One Connection per socket: it parses frames, drives the engine through a Session, batches its
 * writes into one buffer per tick, and enforces the handshake/idle timeouts, heartbeats, maximum payload
 * and the per-connection limits on unconfirmed publishes (back-pressure by pausing the socket).
 */
import net from 'node:net'
import tls from 'node:tls'

import {type PendingGate, guardHandshakes} from '../net/pending.js'
import {listenOn} from '../util/net.js'
import {MqError, PermissionError, UsageError, errorText, isMqError} from '../errors.js'
import type {Logger} from '../log.js'
import {type BrokerEngine, whenReady} from './backend.js'
import {type DeliveryOut, type ExchangeType, type PublishResult, type Session} from './engine.js'
import {type ResolvedPermissions, monitorForbidden, peekForbidden} from './permissions.js'
import {BATCH_BYTES, BATCH_MAX_COUNT, BIG_BODY, DeliveryBatchWriter, SPARE_SLABS, type Slab, Slabs, type Frame, FrameError, FrameParser, NEWLINE, PROTOCOL_VERSION, encodeFrame, encodeHead, encodeValue, frameHeadersOrNone, isHeaderName, parsePublishBatch, sameHeaders} from '../wire/protocol.js'

export interface ServerLimits {
  maxPayload: number
  heartbeatMs: number
  handshakeTimeoutMs: number
  maxUnconfirmed: number
  /** sessions beyond this are refused with E_TOO_MANY_CONNECTIONS (default 1024) */
  maxConnections?: number
  /** TLS sockets still in the handshake, in total and per source address (defaults 256 and 64) */
  maxHandshakes?: number
  maxHandshakesPerSource?: number
}

export interface KeyDirectory {
  put(name: string, encCertPem: string, signCertPem: string, by: ResolvedPermissions): void | Promise<void>
  get(name: string): {encCertPem: string; signCertPem: string} | null
}

export interface BrokerServerOptions {
  engine: BrokerEngine
  logger: Logger
  limits: ServerLimits
  /** TLS options (mutual TLS); undefined = plain TCP, for unit tests only */
  tls?: tls.TlsOptions
  /** identity (CN) and serial of a connection; for plain TCP the HELLO's identity= is trusted */
  permissionsFor: (identity: string) => ResolvedPermissions
  keys: KeyDirectory
  /** reports whether a (lowercase hex) serial is revoked */
  isRevoked?: (serial: string) => boolean
  peer?: (sock: tls.TLSSocket) => {cn: string; serial: string} | null
  /** broker.permissions as configured, for DEFINITIONS */
  permissionRules?: Record<string, unknown>[]
}

/** PEEK shows at most this many messages per request, and at most this many body bytes */
export const PEEK_MAX = 1000
export const PEEK_BYTES = 8 * 1024 * 1024

/** One output arena; a tick's small frames usually fit, and a frame that does not gets its own. */
const ARENA_SIZE = 64 * 1024
const EMPTY_ARENA = Buffer.alloc(0)
/** Output bytes beyond which we stop pushing deliveries and stop reading requests. */
const OUT_HIGH_WATER = 1024 * 1024

export class BrokerServer {
  readonly server: net.Server
  readonly connections = new Set<Connection>()
  /** TLS sockets still in the handshake (absent over plain TCP) */
  readonly handshakes?: PendingGate
  private connSeq = 1
  private readonly maxConnections: number
  private refused = 0
  private refusedLoggedAt = 0

  constructor(readonly opts: BrokerServerOptions) {
    this.maxConnections = opts.limits.maxConnections ?? 1024
    const maxHandshakes = opts.limits.maxHandshakes ?? 256
    if (opts.tls) {
      // noDelay on the raw TCP socket: small confirms must not wait for Nagle + delayed ACKs
      this.server = tls.createServer({...opts.tls, handshakeTimeout: opts.limits.handshakeTimeoutMs || 120_000, noDelay: true}, (s) => this.accept(s))
      this.server.on('connection', (raw: net.Socket) => raw.setNoDelay(true))
      this.server.on('secureConnection', (s: tls.TLSSocket) => s.disableRenegotiation())
      this.server.on('tlsClientError', (err, sock) => {
        opts.logger.debug('TLS handshake refused', {error: err.message, remote: sock.remoteAddress})
      })
      // a hard handshake deadline from accept and a cap on unauthenticated sockets (Node's own timeout is reset by each byte)
      this.handshakes = guardHandshakes(this.server as tls.Server, {deadlineMs: opts.limits.handshakeTimeoutMs, maxPending: maxHandshakes, maxPendingPerSource: opts.limits.maxHandshakesPerSource ?? 64}, opts.logger, 'broker')
    } else {
      this.server = net.createServer({noDelay: true}, (s) => this.accept(s))
    }
    // a hard cap on raw sockets: sessions plus handshakes (which the guard caps on its own); past
    // maxConnections a client still completes TLS and is told why it is refused
    this.server.maxConnections = this.maxConnections + maxHandshakes
    this.server.on('drop', () => this.noteRefused())
    // a failed listen() rejects and becomes the command's E_LISTEN error: log only what happens later
    this.server.on('error', (err) => {
      if (this.server.listening) opts.logger.error('server error', {error: err})
    })
  }

  /** Logs refusals at most once a second, with how many there were, so a flood cannot flood the log. */
  private noteRefused(): void {
    this.refused++
    const now = Date.now()
    if (now - this.refusedLoggedAt < 1000) return
    this.refusedLoggedAt = now
    this.opts.logger.warn('connection refused: broker.max_connections reached', {max_connections: this.maxConnections, refused: this.refused})
    this.refused = 0
  }

  listen(port: number, host: string): Promise<number> {
    return listenOn(this.server, port, host)
  }

  setSecureContext(options: tls.TlsOptions): void {
    if (this.server instanceof tls.Server) this.server.setSecureContext(options)
  }

  /** Closes live connections whose certificate serial is now revoked; returns how many. */
  dropRevoked(revoked: Set<string>): number {
    let n = 0
    for (const c of this.connections) {
      if (c.serial && revoked.has(c.serial)) {
        c.fail(new PermissionError('E_CERT_REVOKED', `the certificate of ${c.identity} (serial ${c.serial}) was revoked`), true)
        n++
      }
    }
    return n
  }

  private accept(sock: net.Socket): void {
    sock.setNoDelay(true)
    sock.on('error', () => {})
    let identity = 'anonymous'
    let serial = ''
    if (this.opts.tls) {
      const peer = this.opts.peer?.(sock as tls.TLSSocket) ?? null
      if (!peer || !(sock as tls.TLSSocket).authorized) {
        sock.end(encodeFrame('ERR', 0, {code: 'E_TLS_CLIENT_CERT', message: 'a client certificate from this broker\'s CA is required'}))
        sock.destroy()
        return
      }
      identity = peer.cn
      serial = peer.serial
      if (this.opts.isRevoked?.(serial)) {
        sock.end(encodeFrame('ERR', 0, {code: 'E_CERT_REVOKED', message: `certificate serial ${serial} is revoked`}))
        sock.destroy()
        return
      }
    }
    if (this.connections.size >= this.maxConnections) {
      this.noteRefused()
      sock.end(encodeFrame('ERR', 0, {code: 'E_TOO_MANY_CONNECTIONS', hint: 'Try this: retry later, close idle connections, or raise broker.max_connections', message: `the broker already has ${this.connections.size} connections (broker.max_connections)`}))
      setTimeout(() => sock.destroy(), 1000).unref()
      return
    }
    const c = new Connection(this, sock, this.connSeq++, identity, serial, !this.opts.tls)
    this.connections.add(c)
    sock.on('close', () => {
      this.connections.delete(c)
      c.closed()
    })
  }

  /** set by close(): connections read nothing more, so what was taken in can be committed and confirmed */
  draining = false

  /**
   * A graceful stop: stop accepting, stop reading, let the store commit the open group so every
   * publish taken in gets its confirm, write those confirms, then close; at `deadlineMs` whatever is
   * left is destroyed. A publish still unread at that point was never written: the client's retry
   * is not a duplicate.
   */
  async close(deadlineMs = 0): Promise<void> {
    this.draining = true
    const listening = new Promise<void>((r) => this.server.close(() => r()))
    const store = this.opts.engine.store
    if (deadlineMs > 0 && this.connections.size > 0) {
      for (const c of this.connections) c.sock.pause()
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<void>((r) => (timer = setTimeout(r, deadlineMs)))
      const graceful = (async () => {
        // afterCommit callbacks run in order: once this one has, every earlier publish has its confirm queued
        if (store) await store.flush().catch(() => {})
        await Promise.all([...this.connections].map((c) => c.finish()))
      })()
      await Promise.race([graceful, deadline])
      clearTimeout(timer)
    }
    for (const c of this.connections) c.sock.destroy()
    await listening
  }
}

type Args = Record<string, string | number | boolean | undefined>

/** Message headers for DELIVER/GET; a name no frame can carry (stored before publish refused them) is left out rather than thrown inside dispatch. */
function outHeaders(headers: Record<string, string>, args: Args): void {
  for (const k in headers) if (isHeaderName(k)) args[`h.${k}`] = headers[k]
}

function hasHeaders(h: Record<string, string>): boolean {
  for (const _ in h) return true
  return false
}

/** h.* arguments of a DELIVERS line; names no frame can carry are left out, as DELIVER does */
function deliveryHeaderArgs(headers: Record<string, string>): string {
  let out = ''
  for (const k in headers) if (isHeaderName(k)) out += ' h.' + encodeValue(k) + '=' + encodeValue(headers[k])
  return out
}

/** DELIVERS records share the headers on its line; bigger headers than this go per DELIVER */
const DELIVERS_HEADER_ARGS_MAX = 4096

class Connection {
  readonly parser: FrameParser
  session?: Session
  perms!: ResolvedPermissions
  private unconfirmed = 0
  private pausedForConfirms = false
  /** paused by the engine's flow control until a lagging queue's consumers catch up */
  private pausedForFlow = false
  /** paused while the broker-wide memory alarm is on (see memory.ts) */
  private pausedForMemory = false
  private lastConsumer = ''
  private lastConsumerArg = ''
  /** negotiated in HELLO (confirms=batch): CONFIRM upto=N frames instead of one OK per publish */
  private batchConfirms = false
  /** negotiated in HELLO (batch=1): a tick's deliveries to one consumer leave as one DELIVERS frame */
  private batchDeliveries = false
  /** negotiated in HELLO (batch_headers=1): messages with headers go in DELIVERS too, the headers on its line */
  private batchHeaders = false
  private readonly dbatch = new DeliveryBatchWriter()
  private dbatchTag = ''
  /** the open DELIVERS batch's headers (NO_HEADERS-like empty object for none) */
  private dbatchHeaders: Record<string, string> = {}
  private durablePending = 0
  private confirmUpTo = 0
  private confirmScheduled = false
  private lastIn = Date.now()
  private lastOut = Date.now()
  private lastPing = 0
  private readonly connectedAt = Date.now()
  /** when the current incomplete header line started (0 = none) */
  private headerSince = 0
  /** when the body being received started (0 = none) */
  private bodySince = 0
  private bodySeqSeen = 0
  private timer?: NodeJS.Timeout
  /**
   * Small frames are written straight into an output arena and leave as one slice per tick; a
   * flushed region is never written again (the socket may still hold it), so no per-frame buffer
   * and no concatenation copy.
   */
  private arena: Buffer = EMPTY_ARENA
  /** the arena's slab (null while EMPTY_ARENA): its flushed regions are out until their write callbacks */
  private arenaSlab: Slab | null = null
  private readonly arenas = new Slabs(ARENA_SIZE, SPARE_SLABS)
  private arenaStart = 0
  private arenaFill = 0
  /** bytes in the arena not yet handed to the socket */
  private get outLen(): number {
    return this.arenaFill - this.arenaStart
  }
  private flushScheduled = false
  private dead = false
  private heartbeatMs: number

  constructor(
    readonly srv: BrokerServer,
    readonly sock: net.Socket,
    readonly id: number,
    public identity: string,
    readonly serial: string,
    /** plain TCP (tests): the session opens on HELLO, with the identity it names */
    plain: boolean,
  ) {
    const {limits} = srv.opts
    // big bodies in shared memory: the store's writer thread reads a durable one where it is
    this.parser = new FrameParser(limits.maxPayload, {sharedBodies: true})
    this.heartbeatMs = limits.heartbeatMs
    if (!plain) this.open(identity)
    sock.on('data', (d: Buffer) => this.onData(d))
    sock.on('drain', () => {
      if (this.session) srv.opts.engine.kick(this.session)
      this.maybeResume()
    })
    const tick = Math.max(250, Math.min(limits.handshakeTimeoutMs || 1000, limits.heartbeatMs || 1000) / 4)
    this.timer = setInterval(() => this.onTick(), tick)
    this.timer.unref()
  }

  private open(identity: string): void {
    this.identity = identity
    this.perms = this.srv.opts.permissionsFor(identity)
    const sink = {
      cancelled: (tag: string) => this.send('CANCELLED', 0, {consumer: tag}),
      deliver: (d: DeliveryOut) => this.deliver(d),
      writable: () => !this.dead && this.sock.writableLength + this.outLen + this.dbatch.bytes < OUT_HIGH_WATER,
    }
    this.session = this.srv.opts.engine.openSession(identity, sink, this.perms)
  }

  closed(): void {
    this.dead = true
    if (this.timer) clearInterval(this.timer)
    if (this.session) this.srv.opts.engine.closeSession(this.session)
  }

  private onTick(): void {
    const now = Date.now()
    // an idle connection gives its output arena back
    if (this.arenaFill === this.arenaStart && this.arena !== EMPTY_ARENA && now - this.lastOut > 1000) {
      if (this.arenaSlab) this.arenas.retire(this.arenaSlab)
      this.arenas.clear()
      this.arenaSlab = null
      this.arena = EMPTY_ARENA
      this.arenaStart = this.arenaFill = 0
      this.dbatch.release()
    } else if (this.sock.writableLength === 0) {
      // a drained socket: the spares a backlog left behind go, one of each stays for the next burst
      this.arenas.trim(1)
      this.dbatch.trimSpares(1)
    }
    const {limits} = this.srv.opts
    const t = limits.handshakeTimeoutMs
    if (t > 0 && !this.session && now - this.connectedAt > t) {
      this.fail(new MqError('E_HANDSHAKE_TIMEOUT', `no HELLO within ${t} ms`), true)
      return
    }
    // slow-drip defence: a header line, once started, must arrive within the handshake timeout
    if (t > 0 && this.headerSince > 0 && now - this.headerSince > t) {
      this.fail(new MqError('E_FRAME_TIMEOUT', `frame header not completed within ${t} ms`), true)
      return
    }
    // a body must keep flowing at 64 KiB/s or better (plus the handshake timeout as slack)
    const body = this.parser.bodyPending
    if (t > 0 && body > 0 && this.bodySince > 0 && now - this.bodySince > t + body / 64) {
      this.fail(new MqError('E_FRAME_TIMEOUT', `frame body of ${body} bytes not completed within ${Math.round(t + body / 64)} ms`), true)
      return
    }
    if (this.heartbeatMs > 0) {
      if (now - this.lastIn > this.heartbeatMs * 2) {
        this.fail(new MqError('E_HEARTBEAT_TIMEOUT', `nothing received for ${this.heartbeatMs * 2} ms`), true)
        return
      }
      // ping when we have been silent, and also when the peer has (a consumer that only receives
      // would otherwise never send anything and be taken for dead)
      if (now - this.lastOut >= this.heartbeatMs || (now - this.lastIn >= this.heartbeatMs && now - this.lastPing >= this.heartbeatMs)) {
        this.lastPing = now
        this.write(encodeFrame('PING', 0))
      }
    }
  }

  private onData(d: Buffer): void {
    const now = Date.now()
    this.lastIn = now
    try {
      this.parser.push(
        d,
        (f) => this.handle(f),
        (e) => this.send('ERR', e.id, {code: e.code, message: e.message}),
      )
    } catch (error) {
      this.fail(error, true)
      return
    }
    if (!this.parser.headerPartial) this.headerSince = 0
    else if (this.headerSince === 0) this.headerSince = now
    if (this.parser.bodyPending === 0) this.bodySince = 0
    else if (this.bodySince === 0 || this.bodySeqSeen !== this.parser.bodySeq) {
      this.bodySince = now
      this.bodySeqSeen = this.parser.bodySeq
    }
    if (this.sock.writableLength > OUT_HIGH_WATER && !this.sock.isPaused()) this.sock.pause()
  }

  /** Sends what is queued (confirms included), ends the connection and resolves once the socket closed. */
  finish(): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.sock.destroyed) return resolve()
      this.sock.once('close', () => resolve())
      this.flush()
      this.dead = true
      this.sock.end()
    })
  }

  private maybeResume(): void {
    if (this.dead || this.srv.draining) return
    if (this.pausedForConfirms && this.unconfirmed > this.srv.opts.limits.maxUnconfirmed / 2) return
    if (this.pausedForFlow || this.pausedForMemory) return
    this.pausedForConfirms = false
    if (this.sock.writableLength <= OUT_HIGH_WATER && this.sock.isPaused()) this.sock.resume()
  }

  /**
   * Frames written in one tick leave as one buffer: one TLS record batch and one syscall instead
   * of a writev of hundreds of small chunks. Big frames go out on their own, uncopied.
   */
  private write(buf: Buffer): void {
    if (this.dead) return
    if (this.dbatch.count > 0) this.closeDeliveries()
    this.lastOut = Date.now()
    if (buf.length >= 64 * 1024) {
      this.flush()
      this.sock.write(buf)
      return
    }
    this.reserve(buf.length)
    buf.copy(this.arena, this.arenaFill)
    this.arenaFill += buf.length
  }

  /** A small frame built in place: header line, LEN, body and newline copied once, into the arena. */
  private writeLine(line: string, body: Buffer): void {
    if (this.dead) return
    if (this.dbatch.count > 0) this.closeDeliveries()
    this.lastOut = Date.now()
    const len = body.length
    if (len > 0) line += ' ' + len
    line += '\n'
    // at most 3 bytes per UTF-16 unit; lines are ASCII in practice (values are percent-encoded)
    this.reserve(line.length * 3 + len + 1)
    const a = this.arena
    let at = this.arenaFill + a.write(line, this.arenaFill, 'utf8')
    if (len > 0) {
      body.copy(a, at)
      at += len
      a[at++] = 0x0a
    }
    this.arenaFill = at
  }

  /** Makes room for n more bytes in the arena and schedules the flush of this tick. */
  private reserve(n: number): void {
    // every region flushed so far has been written: the arena starts again at its beginning
    if (this.arenaFill === this.arenaStart && this.arenaSlab !== null && this.arenaSlab.out === 0) this.arenaStart = this.arenaFill = 0
    if (this.arenaFill + n > this.arena.length) {
      this.flush()
      // the next arena first: a spare may not be the one just flushed
      const next = this.arenas.get(n)
      if (this.arenaSlab) this.arenas.retire(this.arenaSlab)
      this.arenaSlab = next
      this.arena = next.buf
      this.arenaStart = 0
      this.arenaFill = 0
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true
      process.nextTick(this.flush)
    }
  }

  /** A big frame: header, body and newline go out as they are (no copy of the body). */
  private writeParts(head: Buffer, body: Buffer): void {
    if (this.dead) return
    if (this.dbatch.count > 0) this.closeDeliveries()
    this.lastOut = Date.now()
    this.flush()
    this.sock.cork()
    this.sock.write(head)
    this.sock.write(body)
    this.sock.write(NEWLINE)
    this.sock.uncork()
  }

  private readonly flush = (): void => {
    this.flushScheduled = false
    if (this.dbatch.count > 0) this.closeDeliveries()
    if (this.arenaFill !== this.arenaStart && !this.sock.destroyed) {
      // the region stays out (never written again) until the socket is done with it
      this.sock.write(this.arena.subarray(this.arenaStart, this.arenaFill), this.arenaSlab!.lend())
      this.arenaStart = this.arenaFill
    }
    if (this.corked) {
      this.corked = false
      this.sock.uncork()
    }
  }

  send(verb: string, id: number, args?: Args, body?: Buffer): void {
    this.write(encodeFrame(verb, id, args, body))
  }

  private ok(id: number, args?: Args, body?: Buffer): void {
    if (id !== 0) this.send('OK', id, args, body)
  }

  /** Batch confirms: one `CONFIRM 0 upto=N` per tick covers every publish up to id N not answered by ERR. */
  private confirm(id: number): void {
    if (id > this.confirmUpTo) this.confirmUpTo = id
    if (this.confirmScheduled) return
    this.confirmScheduled = true
    process.nextTick(() => {
      this.confirmScheduled = false
      this.send('CONFIRM', 0, {upto: this.confirmUpTo})
    })
  }

  /** Definitions change rarely: their OK waits for the commit, so an acknowledged declare survives a crash. */
  private okDurable(id: number, args?: Args): void {
    const store = this.srv.opts.engine.store
    if (!store) {
      this.ok(id, args)
      return
    }
    store.afterCommit((err) => (err ? this.fail(err, false, id) : this.ok(id, args)))
  }

  private okJson(id: number, value: unknown): void {
    this.ok(id, {type: 'json'}, Buffer.from(JSON.stringify(value)))
  }

  /** Writes the open DELIVERS batch as one frame. */
  private closeDeliveries(): void {
    const frame = this.dbatch.frame()
    const written = this.dbatch.written()
    this.lastOut = Date.now()
    if (frame.length < BATCH_BYTES) {
      this.write(frame)
      // copied into the arena: its slab may take the next batch
      written()
      return
    }
    // a full batch is written as it is, behind this tick's arena; the socket stays corked until the
    // tick's flush so the TLS layer still gets one write for all of them
    if (!this.corked) {
      this.corked = true
      this.sock.cork()
    }
    if (this.arenaFill > this.arenaStart) {
      this.sock.write(this.arena.subarray(this.arenaStart, this.arenaFill), this.arenaSlab!.lend())
      this.arenaStart = this.arenaFill
    }
    // its slab is written again only once the socket is done with the frame (written or destroyed)
    this.sock.write(frame, written)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      process.nextTick(this.flush)
    }
  }

  private corked = false

  private deliver(d: DeliveryOut): void {
    const m = d.msg
    if (this.batchDeliveries && d.consumerTag && m.body.length < BIG_BODY && (this.batchHeaders || !hasHeaders(m.headers))) {
      // a batch's records share its headers: other headers close it (messages of one PUBLISH_BATCH share one object)
      if (this.dbatch.count > 0 && (d.consumerTag !== this.dbatchTag || !sameHeaders(m.headers, this.dbatchHeaders) || this.dbatch.bytes >= BATCH_BYTES || this.dbatch.count >= BATCH_MAX_COUNT)) this.closeDeliveries()
      let open = this.dbatch.count > 0
      if (!open) {
        const hdrArgs = hasHeaders(m.headers) ? deliveryHeaderArgs(m.headers) : ''
        if (hdrArgs.length <= DELIVERS_HEADER_ARGS_MAX) {
          this.dbatchTag = d.consumerTag
          this.dbatchHeaders = m.headers
          this.dbatch.start(d.consumerTag, hdrArgs)
          open = true
        }
      }
      if (open && this.dbatch.add(d.deliveryTag, m.redelivered, m.deliveryCount, m.timestamp, m.exchange, m.routingKey, m.messageId, m.body)) {
        // lastOut is set when the batch is written (closeDeliveries), not per record
        if (!this.flushScheduled) {
          this.flushScheduled = true
          process.nextTick(this.flush)
        }
        return
      }
    }
    // built by hand: this is the hottest encoder. count=1 and redelivered=0 are the documented
    // defaults and left out; the queue is implied by the consumer tag; an empty exchange is the default
    let line = 'DELIVER 0 tag=' + d.deliveryTag
    if (d.consumerTag) {
      // a connection's deliveries mostly go to one consumer: its encoded argument is kept
      if (d.consumerTag !== this.lastConsumer) {
        this.lastConsumer = d.consumerTag
        this.lastConsumerArg = ' consumer=' + encodeValue(d.consumerTag)
      }
      line += this.lastConsumerArg
    } else line += ' queue=' + encodeValue(d.queue)
    if (m.exchange) line += ' exchange=' + encodeValue(m.exchange)
    line += ' key=' + encodeValue(m.routingKey) + ' message_id=' + encodeValue(m.messageId)
    if (m.redelivered) line += ' redelivered=1'
    if (m.deliveryCount !== 1) line += ' count=' + m.deliveryCount
    line += ' ts=' + m.timestamp
    // a name a frame cannot carry is left out rather than thrown on: one bad message must not stop a queue
    for (const k in m.headers) if (isHeaderName(k)) line += ' h.' + encodeValue(k) + '=' + encodeValue(m.headers[k])
    if (m.body.length >= BIG_BODY) this.writeParts(encodeHead(line, m.body.length), m.body)
    else this.writeLine(line, m.body)
  }

  /** Reports an error; fatal ones close the connection after flushing the ERR frame. */
  fail(err: unknown, fatal: boolean, id = 0): void {
    if (this.dead) return
    const code = err instanceof FrameError || isMqError(err) ? err.code : 'E_INTERNAL'
    const hint = isMqError(err) ? err.hint : undefined
    if (!isMqError(err) && !(err instanceof FrameError)) this.srv.opts.logger.error('connection error', {error: errorText(err), identity: this.identity})
    this.send('ERR', err instanceof FrameError && err.id ? err.id : id, {code, hint, message: errorText(err)})
    if (fatal) {
      this.srv.opts.logger.info('closing connection', {code, identity: this.identity, reason: errorText(err)})
      this.flush()
      this.dead = true
      this.sock.pause()
      this.sock.end()
      const t = setTimeout(() => this.sock.destroy(), 1000)
      t.unref()
    }
  }

  private handle(f: Frame): void {
    if (this.dead) return
    try {
      this.dispatch(f)
    } catch (error) {
      this.fail(error, false, f.id)
    }
  }

  private need(f: Frame, key: string): string {
    const v = f.args[key]
    if (v === undefined) throw new UsageError('E_FRAME_ARG', `${f.verb} needs ${key}=...`, {hint: 'Try this: see docs/protocol.md for the arguments of each verb'})
    return v
  }

  private int(f: Frame, key: string): number | undefined {
    const v = f.args[key]
    if (v === undefined || v === '') return undefined
    if (!/^\d{1,15}$/.test(v)) throw new UsageError('E_FRAME_ARG', `${f.verb} ${key}=${v} is not a non-negative integer`, {hint: 'Try this: see docs/protocol.md'})
    return Number(v)
  }

  private bool(f: Frame, key: string): boolean | undefined {
    const v = f.args[key]
    if (v === undefined) return undefined
    return v === '1' || v === 'true' || v === 'yes'
  }

  private requireAdmin(what: string): void {
    if (!this.perms.admin) throw new PermissionError('E_FORBIDDEN', `${this.identity} may not ${what}: it needs admin in broker.permissions`, {hint: 'Try this: run it as an admin identity (--identity admin)'})
  }

  private requireMonitor(what: string): void {
    if (!this.perms.monitor) throw monitorForbidden(this.identity, what)
  }

  /** Flow control and the confirm of a PUBLISH or PUBLISH_BATCH (of `count` messages) the engine took. */
  private published(id: number, r: PublishResult, count: number): void {
    const engine = this.srv.opts.engine
    // never on a connection that also consumes: its acks are what drains the queue
    if (r.flow !== undefined && !this.pausedForFlow && this.session!.consumers.size === 0) {
      this.pausedForFlow = true
      this.sock.pause()
      engine.whenFlowing(r.flow, () => {
        this.pausedForFlow = false
        this.maybeResume()
      })
    }
    // the memory alarm: publishers stop being read until the broker is back under its watermark
    // (a connection that consumes keeps going: its acks are what frees memory)
    if (engine.memory.alarm && !this.pausedForMemory && this.session!.consumers.size === 0) {
      this.pausedForMemory = true
      this.sock.pause()
      engine.memory.whenBelow(() => {
        this.pausedForMemory = false
        this.maybeResume()
      })
    }
    if (id === 0) return
    const store = engine.store
    const reply = () => (count === 1 ? this.ok(id, {message_id: r.messageId, queues: r.queues.join(',')}) : this.ok(id, {count, queues: r.queues.join(',')}))
    // with batch confirms a publish is confirmed in order: behind this connection's durable publishes still committing
    if (!store || !(r.durable || (this.batchConfirms && this.durablePending > 0))) {
      if (this.batchConfirms) this.confirm(id)
      else reply()
      return
    }
    this.durablePending++
    this.unconfirmed += count
    if (this.unconfirmed >= this.srv.opts.limits.maxUnconfirmed && !this.pausedForConfirms) {
      this.pausedForConfirms = true
      this.sock.pause()
    }
    store.afterCommit((err) => {
      this.durablePending--
      this.unconfirmed -= count
      if (err) this.fail(err, false, id)
      else if (this.batchConfirms) this.confirm(id)
      else reply()
      if (this.pausedForConfirms) this.maybeResume()
    })
  }

  private dispatch(f: Frame): void {
    const engine = this.srv.opts.engine
    if (!this.session) {
      // plain TCP (tests) trusts the HELLO's identity; over TLS the certificate already decided
      if (f.verb !== 'HELLO') throw new UsageError('E_HANDSHAKE', 'the first frame must be HELLO', {hint: 'Try this: HELLO 1 version=1'})
      this.open(f.args.identity ?? 'anonymous')
    }
    const s = this.session!
    switch (f.verb) {
      case 'HELLO': {
        if (f.args.confirms === 'batch') this.batchConfirms = true
        if (f.args.batch === '1') this.batchDeliveries = true
        if (f.args.batch_headers === '1') this.batchHeaders = true
        const hb = this.int(f, 'heartbeat')
        if (hb !== undefined && hb > 0) this.heartbeatMs = this.heartbeatMs > 0 ? Math.max(1000, Math.min(hb, this.heartbeatMs)) : Math.max(1000, hb)
        this.ok(f.id, {
          heartbeat: this.heartbeatMs,
          identity: this.identity,
          max_payload: this.srv.opts.limits.maxPayload,
          confirms: this.batchConfirms ? 'batch' : undefined,
          // PUBLISH_BATCH is understood (DELIVERS are sent only to a client that sent batch=1)
          batch: 1,
          // PUBLISH_BATCH with h.* is understood (DELIVERS carry headers only to a client that sent batch_headers=1)
          batch_headers: 1,
          max_unconfirmed: this.srv.opts.limits.maxUnconfirmed,
          server: 'mq',
          version: PROTOCOL_VERSION,
        })
        return
      }
      case 'PING':
        this.send('PONG', f.id)
        return
      case 'PONG':
        return
      case 'PUBLISH': {
        const r = engine.publish(f.args.exchange ?? '', f.args.key ?? '', f.body, {headers: frameHeadersOrNone(f.args), messageId: f.args.message_id}, this.perms)
        this.published(f.id, r, 1)
        return
      }
      case 'PUBLISH_BATCH': {
        const count = this.int(f, 'count') ?? 0
        if (count < 1 || count > BATCH_MAX_COUNT) throw new UsageError('E_FRAME_ARG', `PUBLISH_BATCH count=${count} must be 1..${BATCH_MAX_COUNT}`, {hint: 'Try this: see docs/protocol.md, "Batches"'})
        const {bodies, ids} = parsePublishBatch(f.body, count, f.id)
        // h.* on the line are every record's headers: one object for all of them
        const r = engine.publishMany(f.args.exchange ?? '', f.args.key ?? '', bodies, ids, this.perms, frameHeadersOrNone(f.args))
        this.published(f.id, r, count)
        return
      }
      case 'ACK': {
        const tags = f.args.tags
        if (tags === undefined) engine.ack(s, this.int(f, 'tag') ?? 0)
        else {
          // tags=1-40,42: every tag is settled even if one of them is unknown; the first error is reported
          let firstError: unknown
          for (const part of tags.split(',')) {
            const m = /^(\d{1,15})(?:-(\d{1,15}))?$/.exec(part)
            if (!m) throw new UsageError('E_FRAME_ARG', `ACK tags=${tags.slice(0, 60)} is not a list of tags and ranges like 1-40,42`, {hint: 'Try this: see docs/protocol.md'})
            const from = Number(m[1])
            const to = m[2] === undefined ? from : Number(m[2])
            if (to < from || to - from >= 65_536) throw new UsageError('E_FRAME_ARG', `ACK range ${part} is not valid (at most 65536 tags)`, {hint: 'Try this: see docs/protocol.md'})
            for (let t = from; t <= to; t++) {
              if (!s.unacked.has(t)) {
                // no exception per unknown tag: a bogus range must stay cheap
                firstError ??= new UsageError('E_UNKNOWN_TAG', `delivery tag ${t} is not an unacknowledged delivery of this connection (already settled?)`, {hint: 'Try this: ack each delivery once, on the connection that received it'})
                continue
              }
              engine.ack(s, t)
            }
          }
          if (firstError) throw firstError
        }
        this.ok(f.id)
        return
      }
      case 'NACK':
        engine.nack(s, this.int(f, 'tag') ?? 0, this.bool(f, 'requeue') ?? true)
        this.ok(f.id)
        return
      case 'REJECT':
        engine.reject(s, this.int(f, 'tag') ?? 0, f.args.reason)
        this.ok(f.id)
        return
      case 'CONSUME': {
        whenReady(
          engine.consume(s, this.need(f, 'queue'), {noAck: this.bool(f, 'no_ack'), prefetch: this.int(f, 'prefetch') ?? 100}),
          (tag) => this.ok(f.id, {consumer: tag}),
          (error) => this.fail(error, false, f.id),
        )
        return
      }
      case 'CANCEL':
        engine.cancel(s, this.need(f, 'consumer'))
        this.ok(f.id)
        return
      case 'GET': {
        // a cluster node reads the message from Redis: the answer may come later
        whenReady(
          engine.get(s, this.need(f, 'queue'), {noAck: this.bool(f, 'no_ack')}),
          (d) => {
            if (!d) {
              this.ok(f.id, {empty: 1})
              return
            }
            const m = d.msg
            const args: Args = {count: m.deliveryCount, exchange: m.exchange, key: m.routingKey, message_id: m.messageId, queue: d.queue, redelivered: m.redelivered, tag: d.deliveryTag, ts: m.timestamp}
            outHeaders(m.headers, args)
            this.ok(f.id, args, m.body)
          },
          (error) => this.fail(error, false, f.id),
        )
        return
      }
      case 'DECLARE_QUEUE': {
        const name = this.need(f, 'name')
        if (!this.perms.canConsume(name) && !this.perms.admin) {
          throw new PermissionError('E_FORBIDDEN', `${this.identity} may not declare queue ${name}: declaring needs the right to consume it (own queues: ${this.identity}, ${this.identity}.*)`, {hint: this.perms.forbidConsume?.(name).hint})
        }
        // a dead-letter queue receives (and may be created for) this queue's messages: it must be ours too
        const dlq = f.args.dead_letter
        if (dlq && !this.perms.canConsume(dlq) && !this.perms.admin) throw new PermissionError('E_FORBIDDEN', `${this.identity} may not use ${dlq} as a dead-letter queue`, {hint: 'Try this: pick a dead-letter queue you may consume (broker.permissions[].consume)'})
        const q = engine.declareQueue(name, {deadLetter: f.args.dead_letter || undefined, durable: this.bool(f, 'durable'), maxLength: this.int(f, 'max_length'), ttlMs: this.int(f, 'ttl'), exact: this.bool(f, 'exact')})
        this.okDurable(f.id, {durable: q.durable, messages: q.ready.length, name: q.name})
        return
      }
      case 'DECLARE_EXCHANGE': {
        const name = this.need(f, 'name')
        if (!this.perms.canPublish(name) && !this.perms.admin) throw new PermissionError('E_FORBIDDEN', `${this.identity} may not declare exchange ${name}`, {hint: 'Try this: ask an admin to add it to broker.permissions[].publish'})
        const ex = engine.declareExchange(name, (f.args.type ?? 'direct') as ExchangeType, {durable: this.bool(f, 'durable') ?? true})
        this.okDurable(f.id, {name: ex.name, type: ex.type})
        return
      }
      case 'BIND': {
        const queue = this.need(f, 'queue')
        const exchange = this.need(f, 'exchange')
        if (!this.perms.admin && !(this.perms.canConsume(queue) && this.perms.canPublish(exchange))) {
          throw new PermissionError('E_FORBIDDEN', `${this.identity} may not bind ${queue} to ${exchange}`, {hint: 'Try this: run it as an admin identity'})
        }
        engine.bind(queue, exchange, f.args.key ?? '')
        this.okDurable(f.id)
        return
      }
      case 'UNBIND': {
        const queue = this.need(f, 'queue')
        const exchange = this.need(f, 'exchange')
        // the same right as binding: who may bind a queue to an exchange may also undo it
        if (!this.perms.admin && !(this.perms.canConsume(queue) && this.perms.canPublish(exchange))) {
          throw new PermissionError('E_FORBIDDEN', `${this.identity} may not unbind ${queue} from ${exchange}`, {hint: 'Try this: run it as an admin identity'})
        }
        engine.unbind(queue, exchange, f.args.key ?? '')
        this.okDurable(f.id)
        return
      }
      case 'DELETE_EXCHANGE': {
        this.requireAdmin('delete exchanges')
        whenReady(engine.deleteExchange(this.need(f, 'name'), {ifUnused: this.bool(f, 'if_unused')}), (n) => this.okDurable(f.id, {bindings: n}), (error) => this.fail(error, false, f.id))
        return
      }
      case 'PEEK': {
        const queue = this.need(f, 'queue')
        if (!(this.perms.canPeek?.(queue) ?? (this.perms.canConsume(queue) || this.perms.monitor))) throw peekForbidden(this.identity, queue)
        const count = this.int(f, 'count') ?? 1
        if (count < 1 || count > PEEK_MAX) throw new UsageError('E_FRAME_ARG', `PEEK count=${count} must be 1..${PEEK_MAX}`, {hint: `Try this: --count ${PEEK_MAX}`})
        whenReady(
          engine.peek(queue, count),
          (r) => {
            // one reply stays bounded whatever the bodies: those that do not fit are left out (a first one too big is cut)
            let budget = PEEK_BYTES
            const messages = []
            for (const m of r.messages) {
              if (m.body.length > budget && messages.length > 0) break
              const body = m.body.length > budget ? m.body.subarray(0, budget) : m.body
              budget -= body.length
              messages.push({body: body.toString('base64'), deliveryCount: m.deliveryCount, exchange: m.exchange, headers: m.headers, messageId: m.messageId, redelivered: m.redelivered, routingKey: m.routingKey, size: m.body.length, timestamp: m.timestamp, ...(body.length < m.body.length ? {truncated: true} : {})})
            }
            this.okJson(f.id, {messages, queue, ready: r.ready})
          },
          (error) => this.fail(error, false, f.id),
        )
        return
      }
      case 'DEFINITIONS':
        this.requireAdmin('export definitions')
        this.okJson(f.id, {...engine.definitions(), permissions: this.srv.opts.permissionRules ?? []})
        return
      case 'DELETE_QUEUE': {
        this.requireAdmin('delete queues')
        whenReady(engine.deleteQueue(this.need(f, 'name')), (n) => this.okDurable(f.id, {messages: n}), (error) => this.fail(error, false, f.id))
        return
      }
      case 'PURGE_QUEUE': {
        this.requireAdmin('purge queues')
        whenReady(engine.purgeQueue(this.need(f, 'name')), (n) => this.okDurable(f.id, {messages: n}), (error) => this.fail(error, false, f.id))
        return
      }
      case 'LIST_QUEUES':
        this.requireMonitor('list queues')
        this.okJson(f.id, engine.listQueues())
        return
      case 'LIST_EXCHANGES':
        this.requireMonitor('list exchanges and bindings')
        this.okJson(f.id, {bindings: engine.listBindings(), exchanges: engine.listExchanges()})
        return
      case 'STATS':
        this.requireMonitor('read broker stats')
        this.okJson(f.id, engine.stats(this.srv.connections.size))
        return
      case 'STATUS': {
        this.requireMonitor('read message statuses')
        whenReady(engine.messageStatus(this.need(f, 'message_id')), (st) => this.okJson(f.id, st), (error) => this.fail(error, false, f.id))
        return
      }
      case 'PUT_KEY': {
        let v: {encCertPem?: unknown; signCertPem?: unknown}
        try {
          v = JSON.parse(f.body.toString('utf8'))
        } catch {
          throw new UsageError('E_FRAME_BODY', 'PUT_KEY body must be JSON {"encCertPem": "...", "signCertPem": "..."}', {hint: 'Try this: see docs/protocol.md'})
        }
        if (typeof v.encCertPem !== 'string' || typeof v.signCertPem !== 'string') throw new UsageError('E_FRAME_BODY', 'PUT_KEY body needs encCertPem and signCertPem strings', {hint: 'Try this: see docs/protocol.md'})
        Promise.resolve(this.srv.opts.keys.put(this.need(f, 'name'), v.encCertPem, v.signCertPem, this.perms)).then(
          () => this.ok(f.id),
          (error) => this.fail(error, false, f.id),
        )
        return
      }
      case 'GET_KEY':
        this.okJson(f.id, this.srv.opts.keys.get(this.need(f, 'name')))
        return
      case 'QUIT':
        this.ok(f.id)
        this.flush()
        this.dead = true
        this.sock.end()
        return
      default:
        throw new UsageError('E_UNKNOWN_VERB', `unknown verb ${f.verb}`, {hint: 'Try this: see docs/protocol.md for the verbs'})
    }
  }
}
