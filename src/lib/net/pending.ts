/**
 * Admission of sockets that have not proved themselves yet (a TLS handshake in progress, a
 * plain-text connection that has not sent a complete command): a hard deadline counted from
 * accept (never reset by the bytes a slow-drip peer trickles in), and a cap on how many such
 * sockets may exist at once, in total and per source address, that is smaller than the
 * listener's connection limit. So unauthenticated sockets can never take every slot.
 *
 * When a cap is reached, the oldest pending socket (of that source, for the per-source cap) is
 * closed to make room, provided it has been pending at least `graceMs` (a real handshake is
 * done by then; a drip never is); otherwise the newcomer is refused. A client sharing an
 * address with a dripper (NAT, loopback) therefore still gets in.
 */
import type net from 'node:net'
import type tls from 'node:tls'

import type {Logger} from '../log.js'

export interface PendingLimits {
  /** hard deadline from accept, ms; 0 = none */
  deadlineMs: number
  /** pending sockets at once, all sources */
  maxPending: number
  /** pending sockets at once from one source address */
  maxPendingPerSource: number
  /** a pending socket younger than this is never evicted (default: min(1000, deadline / 2)) */
  graceMs?: number
}

export interface PendingCounts {
  expired: number
  evicted: number
  refused: number
}

interface Entry {
  since: number
  source: string
  timer?: NodeJS.Timeout
}

export class PendingGate {
  private readonly pending = new Map<net.Socket, Entry>()
  private readonly bySource = new Map<string, number>()
  private readonly grace: number
  /** totals since start */
  readonly totals: PendingCounts = {evicted: 0, expired: 0, refused: 0}
  private unlogged: PendingCounts = {evicted: 0, expired: 0, refused: 0}
  private loggedAt = 0

  constructor(
    readonly limits: PendingLimits,
    private readonly opts: {logger?: Logger; what: string; onClose?: (sock: net.Socket, why: keyof PendingCounts) => void},
  ) {
    this.grace = limits.graceMs ?? Math.min(1000, limits.deadlineMs > 0 ? limits.deadlineMs / 2 : 1000)
  }

  get size(): number {
    return this.pending.size
  }

  /** Takes a new socket in as pending; false when it was refused (and closed). */
  admit(sock: net.Socket): boolean {
    const source = sock.remoteAddress ?? ''
    if ((this.bySource.get(source) ?? 0) >= this.limits.maxPendingPerSource && !this.evictOldest(source)) return this.refuse(sock)
    if (this.pending.size >= this.limits.maxPending && !this.evictOldest()) return this.refuse(sock)
    const e: Entry = {since: Date.now(), source}
    if (this.limits.deadlineMs > 0) {
      e.timer = setTimeout(() => this.drop(sock, 'expired'), this.limits.deadlineMs)
      e.timer.unref()
    }
    this.pending.set(sock, e)
    this.bySource.set(source, (this.bySource.get(source) ?? 0) + 1)
    sock.once('close', () => this.settle(sock))
    return true
  }

  /** The socket proved itself (handshake done, first command): no longer pending. */
  settle(sock: net.Socket): void {
    const e = this.pending.get(sock)
    if (!e) return
    this.pending.delete(sock)
    if (e.timer) clearTimeout(e.timer)
    const n = (this.bySource.get(e.source) ?? 1) - 1
    if (n <= 0) this.bySource.delete(e.source)
    else this.bySource.set(e.source, n)
  }

  isPending(sock: net.Socket): boolean {
    return this.pending.has(sock)
  }

  /** Closes the oldest pending socket (of `source`, if given) when it is past the grace period. */
  evictOldest(source?: string): boolean {
    const now = Date.now()
    // a Map iterates in insertion order: the first match is the oldest
    for (const [sock, e] of this.pending) {
      if (source !== undefined && e.source !== source) continue
      if (now - e.since < this.grace) return false
      this.drop(sock, 'evicted')
      return true
    }
    return false
  }

  /** Clears every timer (the listener is closing). */
  close(): void {
    for (const s of [...this.pending.keys()]) this.settle(s)
  }

  private refuse(sock: net.Socket): false {
    this.count('refused')
    this.opts.onClose?.(sock, 'refused')
    sock.destroy()
    return false
  }

  private drop(sock: net.Socket, why: 'expired' | 'evicted'): void {
    this.settle(sock)
    this.count(why)
    this.opts.onClose?.(sock, why)
    sock.destroy()
  }

  /** One warning per 5 s at most, with the counts since the last one: a flood cannot flood the log. */
  private count(why: keyof PendingCounts): void {
    this.totals[why]++
    this.unlogged[why]++
    const now = Date.now()
    if (!this.opts.logger || now - this.loggedAt < 5000) return
    this.loggedAt = now
    this.opts.logger.warn(`closing ${this.opts.what} sockets that did not finish in time or exceeded the pending limit`, {
      ...this.unlogged, deadline_ms: this.limits.deadlineMs, max_pending: this.limits.maxPending, max_pending_per_source: this.limits.maxPendingPerSource,
    })
    this.unlogged = {evicted: 0, expired: 0, refused: 0}
  }
}

/** The TLS listener settings every mq server shares (config: handshake_timeout_ms, max_handshakes, max_handshakes_per_source). */
export interface HandshakeLimits {
  handshake_timeout_ms: number
  max_handshakes: number
  max_handshakes_per_source: number
}

export function handshakeLimits(c: HandshakeLimits): PendingLimits {
  return {deadlineMs: c.handshake_timeout_ms, maxPending: c.max_handshakes, maxPendingPerSource: c.max_handshakes_per_source}
}

const key = (s: net.Socket) => `${s.remoteAddress}|${s.remotePort}|${s.localAddress}|${s.localPort}`

/**
 * Guards a TLS (or HTTPS) server's handshakes: every raw TCP socket is pending from accept until
 * its handshake completes. Node's own handshakeTimeout is an idle timer that each byte resets, so
 * it is left as a backstop only.
 */
export function guardHandshakes(server: tls.Server, limits: PendingLimits, logger: Logger | undefined, what: string): PendingGate {
  const gate = new PendingGate(limits, {logger, what: `${what} TLS handshake`})
  const raw = new Map<string, net.Socket>()
  // registered after the server's own listener, so the TLS socket already wraps the raw one
  server.on('connection', (sock: net.Socket) => {
    if (!gate.admit(sock)) return
    const k = key(sock)
    raw.set(k, sock)
    sock.once('close', () => raw.get(k) === sock && raw.delete(k))
  })
  server.on('secureConnection', (s: tls.TLSSocket) => {
    const k = key(s)
    const r = raw.get(k)
    if (!r) return
    raw.delete(k)
    gate.settle(r)
  })
  server.on('close', () => gate.close())
  return gate
}
