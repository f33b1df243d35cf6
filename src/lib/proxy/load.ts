/**
 * The proxy bench's load generator: closed-loop HTTP/1.1 over keep-alive mutual-TLS connections,
 * one request in flight per connection, written as raw bytes and read with a minimal response
 * parser. node:https's client cost the generator more CPU than the server it measured, and on a
 * 2-core machine every cycle the generator spends is taken from the proxy (wrk and autocannon exist
 * for the same reason). ResponseFramer reads any HTTP/1.1 response framing (content-length,
 * chunked, bodiless statuses, read-until-close), so a baseline server framed differently from the
 * proxy is measured, not miscounted.
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

const CRLF = Buffer.from('\r\n')
const CRLF2 = Buffer.from('\r\n\r\n')
/** response heads larger than this are a protocol error, not a reason to buffer forever */
const MAX_HEAD = 64 * 1024

/**
 * Splits a byte stream into HTTP/1.1 responses (RFC 9112 section 6.3): 1xx, 204 and 304 have no
 * body; chunked transfer-coding wins over content-length; otherwise content-length; otherwise the
 * body runs to the end of the connection. push() returns the status of each complete final response
 * (1xx interim responses are skipped), -1 for a stream that is not HTTP/1.1 (the caller drops the
 * connection).
 */
export class ResponseFramer {
  private buf: Buffer = Buffer.alloc(0)
  private state: 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'trailer' | 'close' = 'head'
  private status = 0
  private left = 0

  push(d: Buffer): number[] {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d])
    const out: number[] = []
    for (;;) {
      if (this.state === 'head') {
        const end = this.buf.indexOf(CRLF2)
        if (end < 0) {
          if (this.buf.length > MAX_HEAD) return [...out, -1]
          return out
        }
        const head = this.buf.toString('latin1', 0, end)
        this.buf = this.buf.subarray(end + 4)
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(head)
        if (!m) return [...out, -1]
        this.status = Number(m[1])
        if (this.status < 200) continue
        if (this.status === 204 || this.status === 304) {
          out.push(this.status)
          continue
        }
        if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) this.state = 'chunk-size'
        else {
          const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head)
          if (cl) {
            this.state = 'length'
            this.left = Number(cl[1])
          } else this.state = 'close'
        }
      } else if (this.state === 'length') {
        if (this.buf.length < this.left) return out
        this.buf = this.buf.subarray(this.left)
        this.state = 'head'
        out.push(this.status)
      } else if (this.state === 'chunk-size') {
        const eol = this.buf.indexOf(CRLF)
        if (eol < 0) return this.buf.length > MAX_HEAD ? [...out, -1] : out
        // chunk extensions (";name=value") follow the size and are ignored
        const size = Number.parseInt(this.buf.toString('latin1', 0, eol).split(';')[0].trim(), 16)
        if (!Number.isFinite(size) || size < 0) return [...out, -1]
        this.buf = this.buf.subarray(eol + 2)
        if (size === 0) this.state = 'trailer'
        else {
          this.left = size + 2
          this.state = 'chunk-data'
        }
      } else if (this.state === 'chunk-data') {
        if (this.buf.length < this.left) return out
        this.buf = this.buf.subarray(this.left)
        this.state = 'chunk-size'
      } else if (this.state === 'trailer') {
        // trailer fields, each ending in CRLF, then an empty line
        const eol = this.buf.indexOf(CRLF)
        if (eol < 0) return this.buf.length > MAX_HEAD ? [...out, -1] : out
        this.buf = this.buf.subarray(eol + 2)
        if (eol === 0) {
          this.state = 'head'
          out.push(this.status)
        }
      } else {
        // read-until-close: the connection's end completes the response (see end())
        this.buf = Buffer.alloc(0)
        return out
      }
    }
  }

  /** The connection ended: the status of a read-until-close response it completes, else undefined. */
  end(): number | undefined {
    if (this.state !== 'close') return undefined
    this.state = 'head'
    return this.status
  }
}

/** One keep-alive connection's closed loop: request, whole response, next request. */
class LoadConnection {
  private readonly framer = new ResponseFramer()
  private started = 0n
  private onDone?: (status: number, ms: number) => void

  private closed = false

  private constructor(private readonly sock: import('node:tls').TLSSocket) {
    sock.on('data', (d: Buffer) => this.onData(d))
    sock.on('error', () => this.finish(0))
    sock.on('close', () => {
      this.closed = true
      this.finish(this.framer.end() ?? 0)
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
    for (const status of this.framer.push(d)) {
      if (status < 0) {
        this.finish(0)
        this.sock.destroy()
        return
      }
      this.finish(status)
    }
  }

  close(): void {
    this.sock.destroy()
  }
}

/**
 * TLS handshakes in flight at once. Every bench connection comes from one address, and the proxy closes
 * handshakes beyond proxy.max_handshakes_per_source (64) pending from one address; opening them all at once
 * made `--connections` above 64 fail.
 */
const HANDSHAKES_AT_ONCE = 32
/** a connection reset during its handshake (a server's cap on pending handshakes) is tried again, this many times in all */
const CONNECT_TRIES = 20

/** Opens n connections, at most HANDSHAKES_AT_ONCE handshaking; on failure closes those opened and throws. */
async function openAll(u: URL, tls: ConnectionOptions, n: number): Promise<LoadConnection[]> {
  const conns: LoadConnection[] = []
  let started = 0
  let failed: unknown
  const openOne = async (): Promise<LoadConnection> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await LoadConnection.open(u, tls)
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ECONNRESET' || attempt >= CONNECT_TRIES) throw error
        await new Promise((r) => setTimeout(r, 10 * attempt))
      }
    }
  }
  const opener = async () => {
    while (started < n && failed === undefined) {
      started++
      try {
        conns.push(await openOne())
      } catch (error) {
        failed ??= error
      }
    }
  }
  await Promise.all(Array.from({length: Math.min(HANDSHAKES_AT_ONCE, n)}, opener))
  if (failed !== undefined) {
    for (const c of conns) c.close()
    throw failed
  }
  return conns
}

/** Closed-loop load over `connections` keep-alive mutual-TLS connections for `seconds`. */
export async function loadTest(url: string, tls: ConnectionOptions, opts: LoadOptions): Promise<LoadResult> {
  const u = new URL(url)
  const head = `POST ${u.pathname} HTTP/1.1\r\nhost: ${u.host}\r\ncontent-type: application/json\r\ncontent-length: `
  const conns = await openAll(u, tls, opts.connections)
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
