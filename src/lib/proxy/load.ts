/**
 * The proxy bench's load generator: closed-loop HTTP/1.1 over keep-alive mutual-TLS connections,
 * one request in flight per connection, written as raw bytes and read with a minimal response
 * parser. node:https's client cost the generator more CPU than the server it measured, and on a
 * 2-core machine every cycle the generator spends is taken from the proxy (wrk and autocannon exist
 * for the same reason). It reads responses framed by content-length, as every mq server sends them.
 */
import {type ConnectionOptions, connect} from 'node:tls'

export interface LoadResult {
  requests: number
  accepted: number
  errors: number
  seconds: number
  perSecond: number
  p50ms: number
  p99ms: number
}

export interface LoadOptions {
  connections: number
  seconds: number
  /** the request body of the i-th request */
  body: (i: number) => Buffer
  /** the status that counts as accepted */
  expect: number
}

const CRLF2 = Buffer.from('\r\n\r\n')

/** One keep-alive connection's closed loop: request, whole response, next request. */
class LoadConnection {
  private buf: Buffer = Buffer.alloc(0)
  private want = -1
  private status = 0
  private started = 0n
  private onDone?: (status: number, ms: number) => void

  private closed = false

  private constructor(private readonly sock: import('node:tls').TLSSocket) {
    sock.on('data', (d: Buffer) => this.onData(d))
    sock.on('error', () => this.finish(0))
    sock.on('close', () => {
      this.closed = true
      this.finish(0)
    })
  }

  static open(url: URL, tls: ConnectionOptions): Promise<LoadConnection> {
    return new Promise((resolve, reject) => {
      const s = connect({...tls, checkServerIdentity: () => undefined, host: url.hostname, port: Number(url.port)})
      s.setNoDelay(true)
      s.once('secureConnect', () => resolve(new LoadConnection(s)))
      s.once('error', reject)
    })
  }

  /** Sends one request; resolves with its status (0 = the connection failed) and latency. */
  send(head: string, body: Buffer): Promise<{status: number; ms: number}> {
    return new Promise((resolve) => {
      if (this.closed) return resolve({ms: 0, status: 0})
      this.onDone = (status, ms) => resolve({ms, status})
      this.started = process.hrtime.bigint()
      this.sock.write(Buffer.concat([Buffer.from(head + body.length + '\r\n\r\n', 'latin1'), body]))
    })
  }

  private finish(status: number): void {
    const done = this.onDone
    if (!done) return
    this.onDone = undefined
    done(status, Number(process.hrtime.bigint() - this.started) / 1e6)
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d])
    if (this.want < 0) {
      const end = this.buf.indexOf(CRLF2)
      if (end < 0) return
      const head = this.buf.toString('latin1', 0, end)
      this.status = Number(head.slice(9, 12))
      const m = /\r\ncontent-length:\s*(\d+)/i.exec(head)
      this.want = end + 4 + (m ? Number(m[1]) : 0)
    }
    if (this.buf.length < this.want) return
    this.buf = this.buf.subarray(this.want)
    this.want = -1
    this.finish(this.status)
  }

  close(): void {
    this.sock.destroy()
  }
}

/** Closed-loop load over `connections` keep-alive mutual-TLS connections for `seconds`. */
export async function loadTest(url: string, tls: ConnectionOptions, opts: LoadOptions): Promise<LoadResult> {
  const u = new URL(url)
  const head = `POST ${u.pathname} HTTP/1.1\r\nhost: ${u.host}\r\ncontent-type: application/json\r\ncontent-length: `
  const conns = await Promise.all(Array.from({length: opts.connections}, () => LoadConnection.open(u, tls)))
  let lat: number[] = []
  let accepted = 0
  let errors = 0
  let i = 0
  const loop = async (c: LoadConnection, until: () => boolean) => {
    while (until()) {
      const r = await c.send(head, opts.body(i++))
      lat.push(r.ms)
      if (r.status === opts.expect) accepted++
      else errors++
      if (r.status === 0) return
    }
  }
  try {
    // warm up every connection first, outside the measurement
    for (let k = 0; k < 2; k++) await Promise.all(conns.map((c) => c.send(head, opts.body(i++))))
    lat = []
    accepted = 0
    errors = 0
    const t0 = Date.now()
    const end = t0 + opts.seconds * 1000
    await Promise.all(conns.map((c) => loop(c, () => Date.now() < end)))
    const seconds = (Date.now() - t0) / 1000
    lat.sort((a, b) => a - b)
    const q = (p: number) => (lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] * 100) / 100 : 0)
    return {accepted, errors, p50ms: q(0.5), p99ms: q(0.99), perSecond: Math.round(accepted / seconds), requests: lat.length, seconds: Math.round(seconds * 10) / 10}
  } finally {
    for (const c of conns) c.close()
  }
}
