/**
 * The native protocol server (docs/protocol.md) over mutual TLS (plain TCP only for unit tests).
 * One Connection per socket: it parses frames, drives the engine through a Session, batches its
 * writes with cork/uncork, and enforces the handshake/idle timeouts, heartbeats, maximum payload
 * and the per-connection limits on unconfirmed publishes (back-pressure by pausing the socket).
 */
import net from 'node:net'
import tls from 'node:tls'

import {MqError, PermissionError, UsageError, errorText, isMqError} from '../errors.js'
import type {Logger} from '../log.js'
import {type DeliveryOut, type Engine, type ExchangeType, type Session} from './engine.js'
import {type ResolvedPermissions} from './permissions.js'
import {type Frame, FrameError, FrameParser, PROTOCOL_VERSION, encodeFrame, frameHeaders, isHeaderName} from './protocol.js'

export interface ServerLimits {
  maxPayload: number
  heartbeatMs: number
  handshakeTimeoutMs: number
  maxUnconfirmed: number
}

export interface KeyDirectory {
  put(name: string, encCertPem: string, signCertPem: string, by: ResolvedPermissions): void | Promise<void>
  get(name: string): {encCertPem: string; signCertPem: string} | null
}

export interface BrokerServerOptions {
  engine: Engine
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
}

/** Output bytes beyond which we stop pushing deliveries and stop reading requests. */
const OUT_HIGH_WATER = 4 * 1024 * 1024

export class BrokerServer {
  readonly server: net.Server
  readonly connections = new Set<Connection>()
  private connSeq = 1

  constructor(readonly opts: BrokerServerOptions) {
    if (opts.tls) {
      this.server = tls.createServer({...opts.tls, handshakeTimeout: opts.limits.handshakeTimeoutMs || 120_000}, (s) => this.accept(s))
      this.server.on('tlsClientError', (err, sock) => {
        opts.logger.debug('TLS handshake refused', {error: err.message, remote: sock.remoteAddress})
      })
    } else {
      this.server = net.createServer((s) => this.accept(s))
    }
    this.server.on('error', (err) => opts.logger.error('server error', {error: err}))
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const onErr = (e: Error) => reject(e)
      this.server.once('error', onErr)
      this.server.listen(port, host, () => {
        this.server.off('error', onErr)
        const a = this.server.address()
        resolve(typeof a === 'object' && a ? a.port : port)
      })
    })
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
    const c = new Connection(this, sock, this.connSeq++, identity, serial, !this.opts.tls)
    this.connections.add(c)
    sock.on('close', () => {
      this.connections.delete(c)
      c.closed()
    })
  }

  async close(): Promise<void> {
    for (const c of this.connections) c.sock.destroy()
    await new Promise<void>((r) => this.server.close(() => r()))
  }
}

type Args = Record<string, string | number | boolean | undefined>

/** Message headers for DELIVER/GET; a name no frame can carry (stored before publish refused them) is left out rather than thrown inside dispatch. */
function outHeaders(headers: Record<string, string>, args: Args): void {
  for (const k in headers) if (isHeaderName(k)) args[`h.${k}`] = headers[k]
}

class Connection {
  readonly parser: FrameParser
  session?: Session
  perms!: ResolvedPermissions
  private unconfirmed = 0
  private pausedForConfirms = false
  private lastIn = Date.now()
  private lastOut = Date.now()
  private readonly connectedAt = Date.now()
  /** when the current incomplete header line started (0 = none) */
  private headerSince = 0
  private timer?: NodeJS.Timeout
  private corked = false
  private dead = false
  private heartbeatMs: number

  constructor(
    readonly srv: BrokerServer,
    readonly sock: net.Socket,
    readonly id: number,
    public identity: string,
    readonly serial: string,
    private readonly plain: boolean,
  ) {
    const {limits} = srv.opts
    this.parser = new FrameParser(limits.maxPayload)
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
      writable: () => !this.dead && this.sock.writableLength < OUT_HIGH_WATER,
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
    if (this.heartbeatMs > 0) {
      if (now - this.lastIn > this.heartbeatMs * 2) {
        this.fail(new MqError('E_HEARTBEAT_TIMEOUT', `nothing received for ${this.heartbeatMs * 2} ms`), true)
        return
      }
      if (now - this.lastOut >= this.heartbeatMs) this.write(encodeFrame('PING', 0))
    }
  }

  private onData(d: Buffer): void {
    const now = Date.now()
    this.lastIn = now
    this.cork()
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
    if (this.sock.writableLength > OUT_HIGH_WATER && !this.sock.isPaused()) this.sock.pause()
  }

  private maybeResume(): void {
    if (this.dead) return
    if (this.pausedForConfirms && this.unconfirmed > this.srv.opts.limits.maxUnconfirmed / 2) return
    this.pausedForConfirms = false
    if (this.sock.writableLength <= OUT_HIGH_WATER && this.sock.isPaused()) this.sock.resume()
  }

  private cork(): void {
    if (this.corked) return
    this.corked = true
    this.sock.cork()
    process.nextTick(() => {
      this.corked = false
      this.sock.uncork()
    })
  }

  private write(buf: Buffer): void {
    if (this.dead) return
    this.lastOut = Date.now()
    this.sock.write(buf)
  }

  send(verb: string, id: number, args?: Args, body?: Buffer): void {
    this.cork()
    this.write(encodeFrame(verb, id, args, body))
  }

  private ok(id: number, args?: Args, body?: Buffer): void {
    if (id !== 0) this.send('OK', id, args, body)
  }

  private okJson(id: number, value: unknown): void {
    this.ok(id, {type: 'json'}, Buffer.from(JSON.stringify(value)))
  }

  private deliver(d: DeliveryOut): void {
    this.cork()
    const m = d.msg
    // count=1 and redelivered=0 are the documented defaults and left out on the hot path
    const args: Args = {
      tag: d.deliveryTag,
      consumer: d.consumerTag || undefined,
      queue: d.queue,
      exchange: m.exchange,
      key: m.routingKey,
      message_id: m.messageId,
      redelivered: m.redelivered ? 1 : undefined,
      count: m.deliveryCount === 1 ? undefined : m.deliveryCount,
      ts: m.timestamp,
    }
    outHeaders(m.headers, args)
    this.write(encodeFrame('DELIVER', 0, args, m.body))
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
        const hb = this.int(f, 'heartbeat')
        if (hb !== undefined && hb > 0) this.heartbeatMs = this.heartbeatMs > 0 ? Math.max(1000, Math.min(hb, this.heartbeatMs)) : Math.max(1000, hb)
        this.ok(f.id, {
          heartbeat: this.heartbeatMs,
          identity: this.identity,
          max_payload: this.srv.opts.limits.maxPayload,
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
        const exchange = f.args.exchange ?? ''
        const key = f.args.key ?? ''
        const headers = frameHeaders(f.args)
        const r = engine.publish(exchange, key, f.body, {headers, messageId: f.args.message_id}, this.perms)
        if (f.id === 0) return
        if (r.durable && engine.store) {
          this.unconfirmed++
          if (this.unconfirmed >= this.srv.opts.limits.maxUnconfirmed && !this.pausedForConfirms) {
            this.pausedForConfirms = true
            this.sock.pause()
          }
          engine.store.afterCommit((err) => {
            this.unconfirmed--
            if (err) this.fail(err, false, f.id)
            else this.ok(f.id, {message_id: r.messageId, queues: r.queues.join(',')})
            if (this.pausedForConfirms) this.maybeResume()
          })
        } else this.ok(f.id, {message_id: r.messageId, queues: r.queues.join(',')})
        return
      }
      case 'ACK':
        engine.ack(s, this.int(f, 'tag') ?? 0)
        this.ok(f.id)
        return
      case 'NACK':
        engine.nack(s, this.int(f, 'tag') ?? 0, this.bool(f, 'requeue') ?? true)
        this.ok(f.id)
        return
      case 'REJECT':
        engine.reject(s, this.int(f, 'tag') ?? 0, f.args.reason)
        this.ok(f.id)
        return
      case 'CONSUME': {
        const tag = engine.consume(s, this.need(f, 'queue'), {noAck: this.bool(f, 'no_ack'), prefetch: this.int(f, 'prefetch') ?? 100})
        this.ok(f.id, {consumer: tag})
        return
      }
      case 'CANCEL':
        engine.cancel(s, this.need(f, 'consumer'))
        this.ok(f.id)
        return
      case 'GET': {
        const d = engine.get(s, this.need(f, 'queue'), {noAck: this.bool(f, 'no_ack')})
        if (!d) {
          this.ok(f.id, {empty: 1})
          return
        }
        const m = d.msg
        const args: Args = {count: m.deliveryCount, exchange: m.exchange, key: m.routingKey, message_id: m.messageId, queue: d.queue, redelivered: m.redelivered, tag: d.deliveryTag, ts: m.timestamp}
        outHeaders(m.headers, args)
        this.ok(f.id, args, m.body)
        return
      }
      case 'DECLARE_QUEUE': {
        const name = this.need(f, 'name')
        if (!this.perms.canConsume(name) && !this.perms.admin) throw new PermissionError('E_FORBIDDEN', `${this.identity} may not declare queue ${name}`, {hint: 'Try this: ask an admin to add it to broker.permissions[].consume'})
        // a dead-letter queue receives (and may be created for) this queue's messages: it must be ours too
        const dlq = f.args.dead_letter
        if (dlq && !this.perms.canConsume(dlq) && !this.perms.admin) throw new PermissionError('E_FORBIDDEN', `${this.identity} may not use ${dlq} as a dead-letter queue`, {hint: 'Try this: pick a dead-letter queue you may consume (broker.permissions[].consume)'})
        const q = engine.declareQueue(name, {deadLetter: f.args.dead_letter || undefined, durable: this.bool(f, 'durable'), maxLength: this.int(f, 'max_length'), ttlMs: this.int(f, 'ttl')})
        this.ok(f.id, {durable: q.durable, messages: q.ready.length, name: q.name})
        return
      }
      case 'DECLARE_EXCHANGE': {
        const name = this.need(f, 'name')
        if (!this.perms.canPublish(name) && !this.perms.admin) throw new PermissionError('E_FORBIDDEN', `${this.identity} may not declare exchange ${name}`, {hint: 'Try this: ask an admin to add it to broker.permissions[].publish'})
        const ex = engine.declareExchange(name, (f.args.type ?? 'direct') as ExchangeType, {durable: this.bool(f, 'durable') ?? true})
        this.ok(f.id, {name: ex.name, type: ex.type})
        return
      }
      case 'BIND': {
        const queue = this.need(f, 'queue')
        const exchange = this.need(f, 'exchange')
        if (!this.perms.admin && !(this.perms.canConsume(queue) && this.perms.canPublish(exchange))) {
          throw new PermissionError('E_FORBIDDEN', `${this.identity} may not bind ${queue} to ${exchange}`, {hint: 'Try this: run it as an admin identity'})
        }
        engine.bind(queue, exchange, f.args.key ?? '')
        this.ok(f.id)
        return
      }
      case 'DELETE_QUEUE': {
        this.requireAdmin('delete queues')
        this.ok(f.id, {messages: engine.deleteQueue(this.need(f, 'name'))})
        return
      }
      case 'PURGE_QUEUE': {
        this.requireAdmin('purge queues')
        this.ok(f.id, {messages: engine.purgeQueue(this.need(f, 'name'))})
        return
      }
      case 'LIST_QUEUES':
        this.okJson(f.id, engine.listQueues())
        return
      case 'LIST_EXCHANGES':
        this.okJson(f.id, {bindings: engine.listBindings(), exchanges: engine.listExchanges()})
        return
      case 'STATS':
        this.requireAdmin('read broker stats')
        this.okJson(f.id, engine.stats(this.srv.connections.size))
        return
      case 'STATUS': {
        const st = engine.messageStatus(this.need(f, 'message_id'))
        this.okJson(f.id, st)
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
        this.dead = true
        this.sock.end()
        return
      default:
        throw new UsageError('E_UNKNOWN_VERB', `unknown verb ${f.verb}`, {hint: 'Try this: see docs/protocol.md for the verbs'})
    }
  }
}
