import {createPublicKey, randomBytes} from 'node:crypto'
import {createReadStream} from 'node:fs'
import {mkdir, open, readdir, rename, stat, unlink} from 'node:fs/promises'
import {type Server, type Socket, createServer} from 'node:net'
import {join} from 'node:path'
import * as tls from 'node:tls'

import {type Logger, silentLogger} from '../log.js'
import {type PendingLimits, guardHandshakes} from '../net/pending.js'
import {
  CLIENT_ID_BYTES,
  ERROR_CODE,
  MAX_U32,
  MessageType,
  NAME_BYTES,
  Op,
  PAD_BLOCK,
  PULL_ENTRY_HEADER_BYTES,
  RESPONSE_HEADER_BYTES,
  type RequestHeader,
  SEND_HEADER_BYTES,
  V2_HEADER_BYTES,
  V2_KEY_BYTES,
  V3_MAX_KEY_BYTES,
  decodeRegisterPayload,
  decodeRequestHeader,
  decodeSendHeader,
  encodePublicKeyPayload,
  encodePullEntryHeader,
  encodeResponseHeader,
  encodeSendAck,
  encodeUserList,
  headerLayout,
  padLength,
  responseCode,
  writeResponseHeader,
} from './protocol.js'
import {EndOfStream, ReplyWriter, SocketReader, StallTimeout, drained, writeAll, writeFlow} from './reader.js'
import type {RelayStore, RelayUser, StoredMessage} from './store.js'

/** Contents up to this size are stored in the database; bigger ones stream to a file. */
export const INLINE_MAX = 64 * 1024
/** A bad request whose remaining payload is at most this is read and dropped, keeping the connection. */
const SKIP_MAX = 64 * 1024
const MAX_LIST_USERS = 100_000
/**
 * While a file arrives, its bytes are pushed to disk every this many (not only at the end), so the
 * final fsync has at most this much left to write. Each datasync is a journal commit and a cache
 * flush that the writes behind it wait out: every 8 MiB (was) made 256 MiB uploads slower in 4
 * interleaved pairs here (relay/twin 0.53-0.98 -> 0.79-1.48 relay in its own process; in-process
 * 0.62-1.14 -> 0.65-0.94), for the same CPU per MiB.
 */
export const SYNC_EVERY = 32 * 1024 * 1024
/** A file's socket chunks are written to disk in batches of this size... */
const WRITE_BATCH = 1024 * 1024
/** ...with reading going on while up to this many bytes wait for the disk. */
const WRITE_AHEAD = 4 * 1024 * 1024
/**
 * A file's writes on the thread pool at once: one in the kernel, the next already waiting for it
 * (the kernel copies a file's writes one at a time), the pool's other threads left to the rest.
 */
const WRITES_IN_FLIGHT = 2
/** Slowest accepted average upload rate (bytes/s) before a request's deadline closes it. */
const MIN_RATE = 64 * 1024

export interface RelayServerOptions {
  host: string
  port: number
  store: RelayStore
  /** where file contents live: $MQ_HOME/data/relay-files */
  filesDir: string
  maxFileBytes: number
  maxTextBytes: number
  /** idle and stall timeout per connection */
  idleTimeoutMs: number
  logger?: Logger
  /**
   * After a connection's first request, how long to wait for the zero padding of a padded-framing
   * client before deciding it speaks exact frames (only when no byte followed the frame yet).
   */
  paddingGraceMs?: number
  maxConnections?: number
  /** handshakes: hard deadline and caps on sockets still in the handshake (relay.tls.handshake_timeout_ms, max_handshakes...) */
  tls?: {port: number; options: tls.TlsOptions; handshakes?: PendingLimits}
}

interface Conn {
  sock: Socket
  reader: SocketReader
  peer: string
  requests: number
  /** the peer pads requests and expects padded replies */
  padded: boolean
  /** a streamed reply is partly written: a 9000 now would land inside it */
  midReply: boolean
  /** sendNow(): the sender of this connection's last text and its hex key (a connection mostly speaks for one user) */
  client?: Buffer
  clientKey: string
  /** sendNow(): the recipient of its last text (users never change once registered) */
  dest?: RelayUser
}

/** Pipelined texts of one connection stored in one commit, at most, the first included (bounds the acks held back) */
const PIPELINE_MAX = 64
/** A pipelined text taken by sendNow(): its recipient, its sender's hex id, its commit */
interface Pipelined {
  dest: RelayUser
  from: string
  stored: Promise<number>
}
/** v3 request header (23) + send header (21): a send's content starts here */
const V3_SEND_CONTENT_AT = 44
/** v3 send ack: response header (7) + destination id (16) + message id (4) */
const V3_SEND_ACK_BYTES = RESPONSE_HEADER_BYTES + CLIENT_ID_BYTES + 4
const V3_SEND_ACK_CODE = responseCode(3, Op.send)

/** The 16-byte id at `b[at]` is `id`. */
function sameId(b: Buffer, at: number, id: Buffer): boolean {
  for (let i = 0; i < CLIENT_ID_BYTES; i++) if (b[at + i] !== id[i]) return false
  return true
}

interface Ctx {
  conn: Conn
  h: RequestHeader
  /** header + payload bytes of this request */
  frameLen: number
  /** the framing decision, once made */
  padded?: boolean
  /** a size-0 602's target id, taken from its padding */
  quirkTarget?: Buffer
}

/** A request we refuse: reply 9000; `remaining` payload bytes are still unread. */
class Refusal extends Error {
  constructor(
    readonly reason: string,
    readonly remaining: number,
  ) {
    super(reason)
  }
}

/** The same promise, marked handled: it is awaited later, and a failure meanwhile must not count as unhandled. */
function handled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {})
  return p
}

const allZero = (b: Buffer) => b.every((x) => x === 0)

/**
 * The relay server: a directory of users and a store-and-forward queue of end-to-end encrypted
 * messages, speaking protocol versions 1, 2 and 3 over exact or 1024-padded framing. Every
 * request is read with bounded memory (sizes are checked before reading; file contents stream
 * to disk), every connection has an idle/stall timeout, and any malformed request gets 9000
 * or a closed connection without touching other clients or stored data.
 */
export class RelayServer {
  private servers: Server[] = []
  private secure?: tls.Server
  private conns = new Set<Conn>()
  private handlers = new Set<Promise<void>>()
  /** messages currently being written in a pull reply, so a second connection does not send them twice */
  private inflight = new Set<number>()
  private readonly log: Logger
  private readonly grace: number
  private boundPort = 0
  private boundTlsPort = 0

  constructor(private readonly opts: RelayServerOptions) {
    this.log = opts.logger ?? silentLogger
    this.grace = opts.paddingGraceMs ?? 40
  }

  get port(): number {
    return this.boundPort
  }

  get tlsPort(): number {
    return this.boundTlsPort
  }

  async start(): Promise<void> {
    await mkdir(this.opts.filesDir, {mode: 0o700, recursive: true})
    await this.cleanFiles()
    const plain = createServer((sock) => this.accept(sock))
    this.boundPort = await this.listen(plain, this.opts.port)
    if (this.opts.tls) {
      const secure = tls.createServer({handshakeTimeout: this.opts.idleTimeoutMs || 120_000, ...this.opts.tls.options}, (sock) => {
        const cert = sock.getPeerCertificate()
        this.log.debug('TLS client', {cn: cert?.subject?.CN, peer: sock.remoteAddress})
        this.accept(sock as unknown as Socket)
      })
      secure.on('tlsClientError', (error, sock) => this.log.warn('TLS handshake failed', {error, peer: sock.remoteAddress}))
      guardHandshakes(secure, this.opts.tls.handshakes ?? {deadlineMs: 10_000, maxPending: 256, maxPendingPerSource: 64}, this.log, 'relay')
      this.secure = secure
      this.boundTlsPort = await this.listen(secure, this.opts.tls.port)
    }
  }

  private listen(srv: Server, port: number): Promise<number> {
    srv.maxConnections = this.opts.maxConnections ?? 1024
    this.servers.push(srv)
    return new Promise((resolve, reject) => {
      srv.once('error', reject)
      srv.listen(port, this.opts.host, () => {
        srv.off('error', reject)
        srv.on('error', (error) => this.log.error('listener error', {error}))
        const a = srv.address()
        resolve(typeof a === 'object' && a ? a.port : port)
      })
    })
  }

  /** New TLS material (e.g. a republished CRL) for new handshakes. */
  updateTls(options: tls.TlsOptions): void {
    this.secure?.setSecureContext(options)
  }

  /** Drops half-received files and files no stored message refers to. */
  private async cleanFiles(): Promise<void> {
    const known = await this.opts.store.messageFiles()
    for (const f of await readdir(this.opts.filesDir)) {
      if (f.endsWith('.part') || (f.endsWith('.msg') && !known.has(f))) await unlink(join(this.opts.filesDir, f)).catch(() => {})
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))))
    for (const c of this.conns) c.sock.destroy()
    await Promise.allSettled([...this.handlers])
    this.servers = []
  }

  private accept(sock: Socket): void {
    const p = this.serve(sock).catch((error) => this.log.error('connection handler failed', {error}))
    this.handlers.add(p)
    void p.finally(() => this.handlers.delete(p))
  }

  private async serve(sock: Socket): Promise<void> {
    const peer = `${sock.remoteAddress}:${sock.remotePort}`
    sock.setNoDelay(true)
    sock.on('error', () => {})
    const conn: Conn = {clientKey: '', midReply: false, padded: false, peer, reader: new SocketReader(sock, this.opts.idleTimeoutMs, 128 * 1024), requests: 0, sock}
    this.conns.add(conn)
    this.log.debug('connection', {peer})
    // true while waiting for the next request: every earlier answer was written in full
    let between = true
    try {
      for (;;) {
        between = true
        if (conn.reader.available === 0 && !(await conn.reader.fill(1))) break
        between = false
        const stored = this.sendNow(conn)
        if (stored === undefined) {
          const keep = await this.handle(conn)
          conn.requests++
          if (!keep) break
        } else {
          const dest = conn.dest!
          const from = conn.clientKey
          // Texts pipelined behind this one, already whole in the buffer, join the same commit:
          // one commit for all of them, each acknowledged (in order) only once it is committed.
          let more: Pipelined[] | undefined
          for (let next; (more?.length ?? 0) < PIPELINE_MAX - 1 && (next = this.sendNow(conn)) !== undefined; ) (more ??= []).push({dest: conn.dest!, from: conn.clientKey, stored: handled(next)})
          if (more === undefined) {
            const wait = this.ackNow(conn, dest, from, await stored)
            conn.requests++
            if (wait) await wait
          } else {
            conn.requests += 1 + more.length
            await this.ackAll(conn, [{dest, from, stored}, ...more])
          }
        }
      }
    } catch (error) {
      if (error instanceof StallTimeout) this.log.info('closing idle, stalled or too slow connection', {peer, reason: error.message})
      else if (error instanceof EndOfStream) this.log.warn('truncated request: peer closed mid-request', {peer})
      else if (isPeerReset(error) && between) {
        // some clients (rdar-lab's) close with a reset after reading their answer: a normal end
        this.log.debug('peer reset the connection after its answer', {peer, requests: conn.requests})
      } else if (isPeerReset(error)) {
        this.log.warn(conn.midReply ? 'peer reset the connection before reading all of its answer' : 'truncated request: peer reset mid-request', {peer})
      } else {
        // A store or file-system failure: the client still gets its 9000, then the connection closes.
        this.log.error('request failed', {error, peer})
        if (!sock.destroyed && !conn.midReply) await this.refuseAndClose(conn, undefined)
      }
    } finally {
      this.conns.delete(conn)
      sock.end()
      setTimeout(() => sock.destroy(), 2000).unref()
    }
  }

  /**
   * The common case on its own path: a v3 send of at most INLINE_MAX content bytes, whole in the
   * first buffered chunk, from a sender whose last_seen is fresh, to a recipient held in memory.
   * It is parsed in place, checked as send() checks it and stored without send()'s chain of async
   * calls, each a promise and a microtask per text, and without the hex conversions of ids it saw
   * on the last text. Resolves with the message's id once committed (then ackNow()). Undefined,
   * with nothing consumed, whenever any of that does not hold: handle() then does everything,
   * refusals included.
   */
  private sendNow(conn: Conn): Promise<number> | undefined {
    const c = conn.reader.firstChunk()
    // version 3, code 603 (0x025B little-endian)
    if (c === undefined || c.length < V3_SEND_CONTENT_AT || c[16] !== 3 || c[17] !== 0x5b || c[18] !== 0x02) return undefined
    const size = c.readUInt32LE(V2_HEADER_BYTES + CLIENT_ID_BYTES + 1)
    const type = c[V2_HEADER_BYTES + CLIENT_ID_BYTES]
    const o = this.opts
    if (c.readUInt32LE(19) !== SEND_HEADER_BYTES + size || size > INLINE_MAX || c.length < V3_SEND_CONTENT_AT + size) return undefined
    if (this.contentRefusal(type, size) !== undefined) return undefined
    let from = conn.client
    if (from === undefined || !sameId(c, 0, from)) {
      from = Buffer.from(c.subarray(0, CLIENT_ID_BYTES))
      conn.client = from
      conn.clientKey = from.toString('hex')
    }
    if (!o.store.touchedRecentlyKey(conn.clientKey)) return undefined
    let dest = conn.dest
    if (dest === undefined || !sameId(c, V2_HEADER_BYTES, dest.id)) {
      dest = o.store.cachedUserKey(c.toString('hex', V2_HEADER_BYTES, V2_HEADER_BYTES + CLIENT_ID_BYTES))
      if (dest === undefined) return undefined
      conn.dest = dest
    }
    const frame = conn.reader.readNow(V3_SEND_CONTENT_AT + size)!
    return o.store.add(dest.id, from, type, size, frame.subarray(V3_SEND_CONTENT_AT), null)
  }

  /** sendNow()'s acknowledgement, built in one buffer; a promise only when the socket's buffer is full. */
  private ackNow(conn: Conn, dest: RelayUser, from: string, id: number): Promise<void> | undefined {
    const {sock} = conn
    if (sock.destroyed) throw new Error('socket closed')
    const frame = Buffer.allocUnsafe(V3_SEND_ACK_BYTES)
    this.fillAck(frame, 0, dest, from, id)
    return sock.write(frame) ? undefined : drained(sock)
  }

  /** The acks of pipelined texts, in order, each once its text is committed, in one write. */
  private async ackAll(conn: Conn, texts: Pipelined[]): Promise<void> {
    const frame = Buffer.allocUnsafe(V3_SEND_ACK_BYTES * texts.length)
    for (const [i, t] of texts.entries()) this.fillAck(frame, i * V3_SEND_ACK_BYTES, t.dest, t.from, await t.stored)
    const {sock} = conn
    if (sock.destroyed) throw new Error('socket closed')
    if (!sock.write(frame)) await drained(sock)
  }

  private fillAck(frame: Buffer, at: number, dest: RelayUser, from: string, id: number): void {
    frame[at] = 3
    frame.writeUInt16LE(V3_SEND_ACK_CODE, at + 1)
    frame.writeUInt32LE(CLIENT_ID_BYTES + 4, at + 3)
    dest.id.copy(frame, at + RESPONSE_HEADER_BYTES)
    frame.writeUInt32LE(id >>> 0, at + RESPONSE_HEADER_BYTES + CLIENT_ID_BYTES)
    if (this.log.enabled('debug')) this.log.debug('stored message', {from, id, to: dest.name})
  }

  /** Handles one request; false when the connection must close. */
  private async handle(conn: Conn): Promise<boolean> {
    const {reader} = conn
    // Slow peers: the header must arrive within the idle timeout, the payload at MIN_RATE or better.
    reader.deadline = Date.now() + this.opts.idleTimeoutMs
    try {
      return await this.handleRequest(conn)
    } finally {
      reader.deadline = undefined
    }
  }

  private async handleRequest(conn: Conn): Promise<boolean> {
    const {reader} = conn
    if (reader.available < 18 && !(await reader.fill(18))) throw new EndOfStream(reader.available)
    const first = reader.peek(18)
    const layout = headerLayout(first)
    if ('error' in layout) return this.refuseAndClose(conn, layout.error, first[16] >= 1 && first[16] <= 3 ? first[16] : 2)
    // one piece, not the first 18 bytes and the rest joined: no copy when the header came whole
    const h = decodeRequestHeader(reader.readNow(layout.total) ?? (await reader.read(layout.total)))
    if ('error' in h) return this.refuseAndClose(conn, h.error, first[16] >= 1 && first[16] <= 3 ? first[16] : 2)
    reader.deadline = Date.now() + this.opts.idleTimeoutMs + Math.ceil(((h.payloadSize + PAD_BLOCK) / MIN_RATE) * 1000)
    const ctx: Ctx = {conn, frameLen: layout.total + h.payloadSize, h}
    try {
      if (h.op === Op.publicKey && h.payloadSize === 0 && h.version !== 3) {
        // Some padded-framing clients send a 602 of size 0 with the target id in the padding:
        // take the whole block now, whatever the requester turns out to be.
        ctx.quirkTarget = await reader.read(CLIENT_ID_BYTES)
        await this.skipUpTo(reader, padLength(ctx.frameLen) - CLIENT_ID_BYTES)
        conn.padded = ctx.padded = true
      }
      if (h.op !== Op.register) {
        const {store} = this.opts
        if (!store.touchedRecently(h.clientId) && !(await store.touch(h.clientId))) throw new Refusal(`unknown client id ${h.clientId.toString('hex')}`, h.payloadSize)
      }
      switch (h.op) {
        case Op.register:
          await this.register(ctx)
          break
        case Op.list:
          await this.list(ctx)
          break
        case Op.publicKey:
          await this.publicKey(ctx)
          break
        case Op.send:
          await this.send(ctx)
          break
        case Op.pull:
          await this.pull(ctx)
          break
      }
      return true
    } catch (error) {
      if (!(error instanceof Refusal)) throw error
      this.log.warn('refused request', {code: h.code, peer: conn.peer, reason: error.reason, version: h.version})
      if (error.remaining > SKIP_MAX) return this.refuseAndClose(conn, undefined, h.versionByte)
      await reader.skip(error.remaining)
      const padded = await this.settleFraming(ctx)
      await this.reply(ctx, ERROR_CODE, Buffer.alloc(0), padded)
      return true
    }
  }

  /** 9000, padded to a block (harmless to exact-framing peers since the connection closes next). */
  private async refuseAndClose(conn: Conn, reason: string | undefined, versionByte = 2): Promise<boolean> {
    if (reason) this.log.warn('malformed request', {peer: conn.peer, reason})
    const frame = Buffer.alloc(PAD_BLOCK)
    encodeResponseHeader(versionByte, ERROR_CODE, 0).copy(frame)
    await writeAll(conn.sock, frame).catch(() => {})
    return false
  }

  /**
   * Decides whether this request came zero-padded to a 1024 multiple (then consumes the padding
   * and the reply is padded too). Padded clients send the whole block at once, so padding is
   * normally already buffered; only a connection's first request waits briefly for it. v3 is
   * always exact.
   */
  private async settleFraming(ctx: Ctx): Promise<boolean> {
    ctx.padded ??= await this.decideFraming(ctx)
    return ctx.padded
  }

  private async decideFraming(ctx: Ctx): Promise<boolean> {
    const {conn} = ctx
    if (ctx.h.version === 3) return false
    const pad = padLength(ctx.frameLen)
    if (pad === 0) return conn.padded
    const {reader} = conn
    let padded = false
    if (reader.available > 0) padded = allZero(reader.peek(Math.min(pad, 17)))
    else if ((conn.requests === 0 || conn.padded) && !reader.isEnded) padded = (await reader.poll(this.grace)) && allZero(reader.peek(Math.min(pad, 17)))
    if (padded) {
      await this.skipUpTo(reader, pad)
      conn.padded = true
    }
    return padded
  }

  private async skipUpTo(reader: SocketReader, n: number): Promise<void> {
    try {
      await reader.skip(n)
    } catch (error) {
      if (!(error instanceof EndOfStream)) throw error
    }
  }

  private reply(ctx: Ctx, code: number, payload: Buffer, padded: boolean): Promise<void> {
    // one buffer for header, payload and padding
    const len = RESPONSE_HEADER_BYTES + payload.length
    const frame = Buffer.allocUnsafe(padded ? len + padLength(len) : len)
    writeResponseHeader(frame, ctx.h.versionByte, code, payload.length)
    payload.copy(frame, RESPONSE_HEADER_BYTES)
    frame.fill(0, len)
    return writeAll(ctx.conn.sock, frame)
  }

  private ok(ctx: Ctx, payload: Buffer, padded: boolean): Promise<void> {
    return this.reply(ctx, responseCode(ctx.h.version, ctx.h.op), payload, padded)
  }

  private async register(ctx: Ctx): Promise<void> {
    const {h} = ctx
    const size = h.payloadSize
    if (h.version === 3 ? size < NAME_BYTES + 3 || size > NAME_BYTES + 2 + V3_MAX_KEY_BYTES : size !== NAME_BYTES + V2_KEY_BYTES) {
      throw new Refusal(`register payload of ${size} bytes`, size)
    }
    const r = decodeRegisterPayload(h.version, await ctx.conn.reader.read(size))
    if ('error' in r) throw new Refusal(r.error, 0)
    if (h.version === 3) {
      const problem = checkStrongKey(r.publicKey)
      if (problem) throw new Refusal(problem, 0)
    }
    const padded = await this.settleFraming(ctx)
    let id = randomBytes(CLIENT_ID_BYTES)
    while (id[0] === 0) id = randomBytes(CLIENT_ID_BYTES)
    if (!(await this.opts.store.addUser(id, r.name, r.publicKey))) {
      this.log.warn('refused request', {peer: ctx.conn.peer, reason: `name ${JSON.stringify(r.name)} is taken`})
      await this.reply(ctx, ERROR_CODE, Buffer.alloc(0), padded)
      return
    }
    this.log.info('registered', {id: id.toString('hex'), name: r.name, peer: ctx.conn.peer, version: h.version})
    await this.ok(ctx, id, padded)
  }

  private async list(ctx: Ctx): Promise<void> {
    if (ctx.h.payloadSize !== 0) throw new Refusal(`list payload of ${ctx.h.payloadSize} bytes`, ctx.h.payloadSize)
    const padded = await this.settleFraming(ctx)
    const users = (await this.opts.store.listUsers(ctx.h.clientId)).slice(0, MAX_LIST_USERS)
    await this.ok(ctx, encodeUserList(users.map((u) => ({clientId: u.id, name: u.name}))), padded)
  }

  private async publicKey(ctx: Ctx): Promise<void> {
    const {h, conn} = ctx
    let target: Buffer
    let padded: boolean
    if (h.payloadSize === CLIENT_ID_BYTES) {
      target = await conn.reader.read(CLIENT_ID_BYTES)
      padded = await this.settleFraming(ctx)
    } else if (ctx.quirkTarget) {
      target = ctx.quirkTarget
      padded = true
    } else {
      throw new Refusal(`public key payload of ${h.payloadSize} bytes`, h.payloadSize)
    }
    const user = await this.opts.store.userById(target)
    if (!user) throw new Refusal(`no user with id ${target.toString('hex')}`, 0)
    if (h.version !== 3 && user.publicKey.length !== V2_KEY_BYTES) {
      throw new Refusal(`${user.name}'s ${user.publicKey.length}-byte key does not fit protocol version ${h.version}`, 0)
    }
    await this.ok(ctx, encodePublicKeyPayload(h.version, user.id, user.publicKey), padded)
  }

  /** Why a send's type and content size are refused, if they are; shared by send() and sendNow(). */
  private contentRefusal(type: number, size: number): string | undefined {
    if (type < MessageType.keyRequest || type > MessageType.file) return `unknown message type ${type}`
    const limit = type === MessageType.file ? this.opts.maxFileBytes : this.opts.maxTextBytes
    if (size > limit) return `type ${type} content of ${size} bytes exceeds the limit of ${limit}`
    return undefined
  }

  private async send(ctx: Ctx): Promise<void> {
    const {h, conn} = ctx
    const size = h.payloadSize
    const o = this.opts
    if (size < SEND_HEADER_BYTES) throw new Refusal(`send payload of ${size} bytes is shorter than its ${SEND_HEADER_BYTES}-byte header`, size)
    if (size - SEND_HEADER_BYTES > Math.max(o.maxFileBytes, o.maxTextBytes)) throw new Refusal(`send payload of ${size} bytes exceeds the limits`, size)
    const sh = decodeSendHeader(conn.reader.readNow(SEND_HEADER_BYTES) ?? (await conn.reader.read(SEND_HEADER_BYTES)))
    const rest = size - SEND_HEADER_BYTES
    if (sh.contentSize !== rest) throw new Refusal(`content size ${sh.contentSize} but ${rest} payload bytes follow`, rest)
    const refused = this.contentRefusal(sh.type, sh.contentSize)
    if (refused !== undefined) throw new Refusal(refused, rest)
    const dest = o.store.cachedUser(sh.destination) ?? (await o.store.userById(sh.destination))
    if (!dest) throw new Refusal(`no user with id ${sh.destination.toString('hex')}`, rest)
    let body: Buffer | null = null
    let file: string | null = null
    if (sh.contentSize <= INLINE_MAX) body = conn.reader.readNow(sh.contentSize) ?? (await conn.reader.read(sh.contentSize))
    else file = await this.receiveFile(conn.reader, sh.contentSize)
    try {
      const padded = ctx.padded ?? (h.version === 3 ? false : await this.settleFraming(ctx))
      const id = await o.store.addMessage({body, file, from: h.clientId, size: sh.contentSize, to: dest.id, type: sh.type})
      if (this.log.enabled('debug')) this.log.debug('stored message', {from: h.clientId.toString('hex'), id, size: sh.contentSize, to: dest.name, type: sh.type})
      await this.ok(ctx, encodeSendAck(dest.id, id), padded)
    } catch (error) {
      if (file) {
        const known = await o.store.messageFiles().catch(() => new Set<string>())
        if (!known.has(file)) await unlink(join(o.filesDir, file)).catch(() => {})
      }
      throw error
    }
  }

  /** Streams `n` content bytes to a new file as they arrive; returns its name once complete and synced. */
  private async receiveFile(reader: SocketReader, n: number): Promise<string> {
    const name = `${randomBytes(16).toString('hex')}.msg`
    const part = join(this.opts.filesDir, `${name}.part`)
    const fh = await open(part, 'wx', 0o600)
    // the writes not yet known to have succeeded (oldest first); every earlier one did
    const inflight: {done: Promise<void>; bytes: number}[] = []
    let syncing: Promise<unknown> = Promise.resolve()
    try {
      // Socket chunks are coalesced into writes of WRITE_BATCH (fewer syscalls), each at its own
      // file offset: up to WRITE_AHEAD bytes of them wait or are being written while reading goes
      // on, WRITES_IN_FLIGHT of them handed to the thread pool at once. The kernel still copies
      // them into the page cache one after another (the inode lock), but the next write already
      // waits in the pool when one ends. Chained writes (the next issued from this thread once the
      // last resolved) left the disk idle until this event loop, busy with sockets or descheduled,
      // got round to it, and the writes were the bound: busy ~100% of a 256 MiB upload, the
      // socket waiting on them ~60% of it. Memory stays under WRITE_AHEAD + one batch, whatever
      // the file's size.
      let pending: Buffer[] = []
      let pendingBytes = 0
      let written = 0
      let synced = 0
      let queued = 0
      let running = 0
      let failed = false
      const turns: (() => void)[] = []
      const issue = () => {
        const parts = pending
        const bytes = pendingBytes
        const at = written
        const done = handled(
          (async () => {
            // at most WRITES_IN_FLIGHT on the thread pool, so an upload leaves it room for others;
            // a write that ends hands its place straight to the next one waiting
            if (running < WRITES_IN_FLIGHT) running++
            else await new Promise<void>((resolve) => turns.push(resolve))
            try {
              // the file is dropped anyway: no more writes into it
              if (failed) throw new Error('an earlier write of this file failed')
              const r = await fh.writev(parts, at)
              if (r.bytesWritten !== bytes) throw new Error(`short write: ${r.bytesWritten} of ${bytes} bytes`)
            } catch (error) {
              failed = true
              throw error
            } finally {
              const next = turns.shift()
              if (next) next()
              else running--
            }
          })(),
        )
        inflight.push({bytes, done})
        written += bytes
        queued += bytes
        pending = []
        pendingBytes = 0
        // start the write-back while the rest arrives, so the final fsync finds little left to do:
        // a datasync once the writes issued so far are done (they may complete in any order)
        if (written - synced >= SYNC_EVERY) {
          synced = written
          const upTo = Promise.all(inflight.map((w) => w.done))
          syncing = handled(Promise.all([syncing, upTo]).then(() => fh.datasync()))
        }
      }
      // waits, oldest first, until at most WRITE_AHEAD bytes are in flight
      const drain = async () => {
        while (queued > WRITE_AHEAD) {
          await inflight[0].done
          queued -= inflight.shift()!.bytes
        }
      }
      // a promise only when the socket must wait for the disk: no await per socket chunk
      await reader.stream(n, (chunk) => {
        pending.push(chunk)
        pendingBytes += chunk.length
        if (pendingBytes < WRITE_BATCH) return undefined
        issue()
        return queued > WRITE_AHEAD ? drain() : undefined
      })
      if (pendingBytes > 0) issue()
      await Promise.all(inflight.map((w) => w.done))
      await syncing
      await fh.sync()
      await fh.close()
    } catch (error) {
      await Promise.allSettled([...inflight.map((w) => w.done), syncing])
      await fh.close().catch(() => {})
      await unlink(part).catch(() => {})
      throw error
    }
    await rename(part, join(this.opts.filesDir, name))
    return name
  }

  private async pull(ctx: Ctx): Promise<void> {
    const {h, conn} = ctx
    if (h.payloadSize !== 0) throw new Refusal(`pull payload of ${h.payloadSize} bytes`, h.payloadSize)
    const padded = await this.settleFraming(ctx)
    const picked: StoredMessage[] = []
    let total = 0
    const broken: number[] = []
    for (const m of await this.opts.store.pending(h.clientId)) {
      if (this.inflight.has(m.id)) continue
      if (total + PULL_ENTRY_HEADER_BYTES + m.size > MAX_U32) break
      if (m.file) {
        const st = await stat(join(this.opts.filesDir, m.file)).catch(() => undefined)
        if (!st || st.size !== m.size) {
          this.log.error('stored message file is missing or has the wrong size; dropping the message', {file: m.file, id: m.id})
          broken.push(m.id)
          continue
        }
      }
      picked.push(m)
      total += PULL_ENTRY_HEADER_BYTES + m.size
    }
    if (broken.length > 0) await this.opts.store.deleteMessages(broken)
    for (const m of picked) this.inflight.add(m.id)
    try {
      const sock = conn.sock
      // the reply's writes, to learn that they all went out even when the socket is gone by then
      const out = new ReplyWriter(sock)
      conn.midReply = true
      await out.write(encodeResponseHeader(h.versionByte, responseCode(h.version, Op.pull), total))
      for (const m of picked) {
        await out.write(encodePullEntryHeader(m.from, m.id, m.type, m.size))
        if (m.file === null) {
          const body = m.size > 0 ? await this.opts.store.body(m.id) : null
          if ((body?.length ?? 0) !== m.size) throw new Error(`stored message ${m.id} lost its content`)
          if (body) await out.write(body)
        } else {
          for await (const chunk of createReadStream(join(this.opts.filesDir, m.file), {highWaterMark: 64 * 1024})) await out.write(chunk as Buffer)
        }
      }
      // A peer that read every entry may have closed already (our side then ended): padding is moot.
      const pad = padded ? padLength(7 + total) : 0
      if (pad > 0 && !sock.writableEnded && !sock.destroyed) sock.write(Buffer.alloc(pad))
      // Delivered once every byte of it was handed to the kernel (the protocol has no acknowledgement):
      // the last entry's last write succeeded. Not writableLength === 0: the end of a file's read stream
      // is an I/O turn after its last chunk was queued, and a peer that resets then makes the socket drop
      // that chunk unsent, and its bytes from writableLength, which reads 0 as if it had gone.
      await out.sent()
      conn.midReply = false
      await this.opts.store.deleteMessages(picked.map((m) => m.id))
      for (const m of picked) if (m.file) await unlink(join(this.opts.filesDir, m.file)).catch(() => {})
      if (picked.length > 0) this.log.debug('delivered', {count: picked.length, to: h.clientId.toString('hex')})
    } finally {
      for (const m of picked) this.inflight.delete(m.id)
    }
  }
}

/** v3 keys: an RSA SubjectPublicKeyInfo of at least 2048 bits. */
export function checkStrongKey(der: Buffer): string | undefined {
  try {
    const k = createPublicKey({format: 'der', key: der, type: 'spki'})
    if (k.asymmetricKeyType !== 'rsa') return `public key type ${k.asymmetricKeyType} is not RSA`
    const bits = k.asymmetricKeyDetails?.modulusLength ?? 0
    if (bits < 2048) return `RSA-${bits} is too weak for protocol version 3 (2048 bits or more)`
    return undefined
  } catch {
    return 'public key is not a DER SubjectPublicKeyInfo'
  }
}

/** The peer went away abruptly (TCP reset, or a write after it closed): the peer's doing, not a server failure. */
function isPeerReset(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException)?.code
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'ECONNABORTED'
}
