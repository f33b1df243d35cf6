/**
 * CipherMQ v1.0 compatibility: its Python clients speak a plain-TCP text protocol, one lowercase
 * command per line, and expect CipherMQ's exact replies. Off by default and loopback-only unless
 * configured, since it has no TLS; messages are its JSON envelopes, stored as opaque payloads.
 */
import {randomUUID} from 'node:crypto'
import net from 'node:net'

import {PendingGate} from '../net/pending.js'
import {listenOn} from '../util/net.js'
import {errorText} from '../errors.js'
import type {Logger} from '../log.js'
import {PermissionError} from '../errors.js'
import {type BrokerEngine, whenReady} from './backend.js'
import {type DeliveryOut, type Permissions, type Session} from './engine.js'

export interface CipherMqOptions {
  engine: BrokerEngine
  logger: Logger
  /** longest command line, in UTF-16 code units (broker.ciphermq.max_line) */
  maxLine: number
  /** connections beyond this are refused (broker.ciphermq.max_connections; default 256) */
  maxConnections?: number
  /** a started command line must end within this, ms (broker.ciphermq.line_timeout_ms; default 10 s; 0 = none) */
  lineTimeoutMs?: number
  /** a connection without a consumer that completes no command this long is closed (broker.ciphermq.idle_timeout_ms; default 5 min; 0 = none) */
  idleTimeoutMs?: number
  /** rights of every CipherMQ client (they are unauthenticated): cipherMqPermissions(), nothing by default */
  perms: Permissions
  /** called after a durable publish so the ACK follows the commit */
  afterCommit?: (cb: (err?: Error) => void) => void
}

const forbidden = (what: string) =>
  new PermissionError('E_FORBIDDEN', `not allowed to ${what} (CipherMQ clients reach only broker.ciphermq.queues and broker.ciphermq.exchanges)`, {hint: 'Try this: list the queues and exchanges in broker.ciphermq.queues / broker.ciphermq.exchanges'})

function envelopeLine(d: DeliveryOut): string {
  const text = d.msg.body.toString('utf8')
  try {
    return JSON.stringify(JSON.parse(text))
  } catch {
    // not JSON (published natively): keep the line protocol intact
    return JSON.stringify({data_b64: d.msg.body.toString('base64'), message_id: d.msg.messageId})
  }
}

export class CipherMqListener {
  readonly server: net.Server
  private readonly socks = new Set<net.Socket>()
  private refused = 0
  private refusedLoggedAt = 0
  /** connections that have not completed a command yet: the first line is due within line_timeout_ms */
  private readonly unproven: PendingGate
  private readonly lineTimeoutMs: number
  private readonly idleTimeoutMs: number

  constructor(private readonly opts: CipherMqOptions) {
    const max = opts.maxConnections ?? 256
    this.lineTimeoutMs = opts.lineTimeoutMs ?? 10_000
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 300_000
    this.unproven = new PendingGate({deadlineMs: this.lineTimeoutMs, graceMs: Math.min(1000, this.lineTimeoutMs / 2 || 1000), maxPending: max, maxPendingPerSource: max}, {
      logger: opts.logger,
      onClose: (sock, why) => {
        // it no longer holds a slot, though its close event comes later
        this.socks.delete(sock)
        if (why === 'expired' && !sock.destroyed) sock.write(`Error: no complete command within ${this.lineTimeoutMs} ms (broker.ciphermq.line_timeout_ms)\n`)
      },
      what: 'CipherMQ',
    })
    this.server = net.createServer((s) => this.accept(s))
    // a failed listen() rejects (E_LISTEN): log only errors of a listening server
    this.server.on('error', (e) => {
      if (this.server.listening) opts.logger.error('CipherMQ listener error', {error: e})
    })
  }

  listen(port: number, host: string): Promise<number> {
    return listenOn(this.server, port, host)
  }

  async close(): Promise<void> {
    for (const s of this.socks) s.destroy()
    this.unproven.close()
    await new Promise<void>((r) => this.server.close(() => r()))
  }

  private accept(sock: net.Socket): void {
    const {engine} = this.opts
    sock.on('error', () => {})
    const max = this.opts.maxConnections ?? 256
    // full: a connection that has sent no complete command for a while (a drip) makes room first
    if (this.socks.size >= max && !this.unproven.evictOldest()) {
      // unauthenticated: refused before any buffer or session exists; logged at most once a second
      this.refused++
      const now = Date.now()
      if (now - this.refusedLoggedAt >= 1000) {
        this.refusedLoggedAt = now
        this.opts.logger.warn('CipherMQ connection refused: broker.ciphermq.max_connections reached', {max_connections: max, refused: this.refused})
        this.refused = 0
      }
      sock.end('Error: too many connections\n')
      setTimeout(() => sock.destroy(), 1000).unref()
      return
    }
    if (!this.unproven.admit(sock)) return
    this.socks.add(sock)
    sock.setNoDelay(true)
    // every reply leaves in ONE write, however many lines it has: CipherMQ's Sender does a single
    // read(4096) after publish_batch and retries the batch when an ACK line is missing from it
    const write = (lines: string[]) => {
      if (!sock.destroyed && lines.length > 0) sock.write(lines.join('\n') + '\n')
    }
    // replies leave in command order even when a durable publish waits for its commit
    const outbox: {ready: boolean; lines: string[]}[] = []
    const flush = () => {
      const out: string[] = []
      while (outbox.length > 0 && outbox[0].ready) out.push(...outbox.shift()!.lines)
      write(out)
    }
    const send = (...lines: string[]) => {
      if (outbox.length === 0) write(lines)
      else outbox.push({lines, ready: true})
    }
    const later = (durable: boolean, lines: () => string[]) => {
      if (!durable || !this.opts.afterCommit) {
        send(...lines())
        return
      }
      const slot = {lines: [] as string[], ready: false}
      outbox.push(slot)
      this.opts.afterCommit((err) => {
        slot.lines = err ? [`Error: ${err.message}`] : lines()
        slot.ready = true
        flush()
      })
    }
    /** message id -> delivery tag, for `ack <message_id>` */
    const byId = new Map<string, number>()
    const perms = this.opts.perms
    const session: Session = engine.openSession('ciphermq', {
      deliver: (d) => {
        byId.set(d.msg.messageId, d.deliveryTag)
        write([`Message: ${d.msg.messageId} ${envelopeLine(d)}`])
      },
      writable: () => sock.writableLength < 1024 * 1024,
    }, perms)
    sock.on('drain', () => engine.kick(session))
    // slow-drip defence: a started line must end within line_timeout_ms; a connection that
    // consumes nothing and completes no command for idle_timeout_ms is closed
    let lineSince = 0
    let lastCommand = Date.now()
    const check = () => {
      const now = Date.now()
      if (this.lineTimeoutMs > 0 && lineSince > 0 && now - lineSince > this.lineTimeoutMs) {
        closeWith(`Error: command line not completed within ${this.lineTimeoutMs} ms (broker.ciphermq.line_timeout_ms)`)
      } else if (this.idleTimeoutMs > 0 && session.consumers.size === 0 && now - lastCommand > this.idleTimeoutMs) {
        closeWith(`Error: idle for ${this.idleTimeoutMs} ms (broker.ciphermq.idle_timeout_ms)`)
      }
    }
    const every = Math.max(50, Math.min(1000, Math.min(this.lineTimeoutMs || 1000, this.idleTimeoutMs || 1000) / 4))
    const ticker = setInterval(check, every)
    ticker.unref()
    const closeWith = (line: string) => {
      clearInterval(ticker)
      buf = ''
      sock.pause()
      if (!sock.destroyed) sock.end(line + '\n')
      setTimeout(() => sock.destroy(), 1000).unref()
    }
    sock.on('close', () => {
      clearInterval(ticker)
      this.socks.delete(sock)
      engine.closeSession(session)
    })
    let buf = ''
    sock.setEncoding('utf8')
    sock.on('data', (chunk: string) => {
      buf += chunk
      if (lineSince === 0) lineSince = Date.now()
      let start = 0
      let nl: number
      while ((nl = buf.indexOf('\n', start)) >= 0) {
        let line = buf.slice(start, nl)
        start = nl + 1
        if (line.endsWith('\r')) line = line.slice(0, -1)
        if (line.length > this.opts.maxLine) {
          tooLong()
          return
        }
        // blank lines prove nothing (a drip of newlines must not keep a connection alive)
        if (line.trim() === '') continue
        lastCommand = Date.now()
        this.unproven.settle(sock)
        try {
          this.command(line, session, send, later, byId)
        } catch (error) {
          send(`Error: ${errorText(error)}`)
        }
      }
      buf = start === 0 ? buf : buf.slice(start)
      // the deadline runs from the first byte of the line still unfinished
      if (start > 0) lineSince = buf.length > 0 ? Date.now() : 0
      // the unfinished line is all we keep: past max_line it can never become a valid command
      if (buf.length > this.opts.maxLine) tooLong()
    })
    const tooLong = () => closeWith(`Error: line too long (more than ${this.opts.maxLine} characters; broker.ciphermq.max_line)`)
  }

  private command(line: string, s: Session, send: (...l: string[]) => void, later: (durable: boolean, lines: () => string[]) => void, byId: Map<string, number>): void {
    const {engine} = this.opts
    const parts = line.trim().split(/\s+/)
    const cmd = parts[0]
    const rest = (n: number) => {
      // the JSON argument is everything after the first n words, spaces included
      let i = 0
      let pos = 0
      const t = line.trim()
      while (i < n) {
        pos = t.indexOf(' ', pos)
        if (pos < 0) return ''
        while (t[pos] === ' ') pos++
        i++
      }
      return t.slice(pos)
    }
    switch (cmd) {
      case 'declare_queue':
        if (!parts[1]) throw new Error('usage: declare_queue <queue>')
        if (!s.perms.admin && !s.perms.canConsume(parts[1])) throw forbidden(`declare queue ${parts[1]}`)
        engine.declareQueue(parts[1])
        send('Queue declared')
        return
      case 'declare_exchange':
        if (!parts[1]) throw new Error('usage: declare_exchange <exchange>')
        if (!s.perms.admin && !s.perms.canPublish(parts[1])) throw forbidden(`declare exchange ${parts[1]}`)
        engine.declareExchange(parts[1], 'direct')
        send('Exchange declared')
        return
      case 'bind':
        if (parts.length < 4) throw new Error('usage: bind <queue> <exchange> <routing_key>')
        if (!s.perms.admin && !(s.perms.canConsume(parts[1]) && s.perms.canPublish(parts[2]))) throw forbidden(`bind ${parts[1]} to ${parts[2]}`)
        engine.bind(parts[1], parts[2], parts[3])
        send('Queue bound')
        return
      case 'publish': {
        if (parts.length < 4) throw new Error('usage: publish <exchange> <routing_key> <json>')
        const json = rest(3)
        const env = this.envelope(json)
        this.refuseDuplicate(env.message_id)
        const r = engine.publish(parts[1], parts[2], Buffer.from(json), {messageId: env.message_id}, s.perms)
        later(r.durable, () => [`ACK ${r.messageId}`])
        return
      }
      case 'publish_batch': {
        if (parts.length < 4) throw new Error('usage: publish_batch <exchange> <routing_key> <json-array>')
        let arr: unknown
        try {
          arr = JSON.parse(rest(3))
        } catch (error) {
          throw new Error(`invalid JSON: ${errorText(error)}`)
        }
        if (!Array.isArray(arr)) throw new Error('publish_batch needs a JSON array')
        const lines: string[] = []
        let durable = false
        for (const el of arr) {
          const text = JSON.stringify(el)
          try {
            const id = el && typeof el === 'object' && typeof (el as {message_id?: unknown}).message_id === 'string' ? (el as {message_id: string}).message_id : undefined
            if (id !== undefined) this.refuseDuplicate(id)
            const r = engine.publish(parts[1], parts[2], Buffer.from(text), {messageId: id}, s.perms)
            durable ||= r.durable
            lines.push(`ACK ${r.messageId}`)
          } catch (error) {
            lines.push(`Error: ${errorText(error)}`)
          }
        }
        later(durable, () => lines)
        return
      }
      case 'consume': {
        const queue = parts[1]
        if (!queue) throw new Error('usage: consume <queue>')
        const failed = (error: unknown) => send(`Error: ${errorText(error)}`)
        // a cluster node looks up a queue declared on another node a moment ago before it says no
        whenReady(
          engine.hasQueue(queue),
          (has) => {
            try {
              if (!has) throw new Error(`queue ${queue} does not exist`)
              if (!s.perms.canConsume(queue)) throw s.perms.forbidConsume?.(queue) ?? forbidden(`consume from queue ${queue}`)
              send('Subscribed to queue')
              whenReady(engine.consume(s, queue, {prefetch: 1000}), () => {}, failed)
            } catch (error) {
              failed(error)
            }
          },
          failed,
        )
        return
      }
      case 'fetch': {
        if (!parts[1]) throw new Error('usage: fetch <queue>')
        whenReady(
          engine.get(s, parts[1]),
          (d) => {
            if (!d) {
              send('No messages')
              return
            }
            byId.set(d.msg.messageId, d.deliveryTag)
            send(`Message: ${d.msg.messageId} ${envelopeLine(d)}`)
          },
          (error) => send(`Error: ${errorText(error)}`),
        )
        return
      }
      case 'ack': {
        const id = parts[1]
        const tag = id === undefined ? undefined : byId.get(id)
        if (tag === undefined) throw new Error(`no unacknowledged message ${id ?? ''} on this connection`)
        byId.delete(id)
        engine.ack(s, tag)
        send(`ACK_CONFIRMED ${id}`)
        return
      }
      case 'stats':
        if (!s.perms.monitor) throw forbidden('read stats')
        send(`Stats: ${JSON.stringify(engine.stats())}`)
        return
      default:
        send('Unknown command')
    }
  }

  /**
   * CipherMQ stores a message id once: a publish of an id the broker already holds (a Sender
   * retrying a batch it thinks failed) is dropped with CipherMQ's "Duplicate message <id> ignored".
   */
  private refuseDuplicate(id: string): void {
    if (this.opts.engine.messageStatus(id) === null) return
    this.opts.logger.warn('duplicate CipherMQ publish ignored', {message_id: id})
    throw new Error(`Duplicate message ${id} ignored`)
  }

  private envelope(json: string): {message_id: string} {
    let v: unknown
    try {
      v = JSON.parse(json)
    } catch (error) {
      throw new Error(`invalid JSON: ${errorText(error)}`)
    }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('the message must be a JSON object')
    const id = (v as {message_id?: unknown}).message_id
    return {message_id: typeof id === 'string' && id.length > 0 ? id : randomUUID()}
  }
}
