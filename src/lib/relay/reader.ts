import type {Duplex} from 'node:stream'

/** The peer closed the connection before sending what was needed. */
export class EndOfStream extends Error {
  constructor(readonly got: number) {
    super('connection closed by peer')
  }
}

/** No byte arrived within the stall timeout. */
export class StallTimeout extends Error {
  constructor(
    readonly ms: number,
    reason?: string,
  ) {
    super(reason ?? `no data for ${ms} ms`)
  }
}

/**
 * Pull-based reading from a socket with bounded memory: the socket is paused whenever more
 * than `highWater` bytes wait unread, and every wait fails after `stallMs` without new bytes.
 * Callers ask for exact byte counts (headers, small payloads) or stream a run of bytes to a sink.
 */
export class SocketReader {
  private chunks: Buffer[] = []
  private buffered = 0
  private ended = false
  private failure?: Error
  private wake?: () => void
  private stallTimer?: NodeJS.Timeout
  private onStall?: () => void
  /** when the pending stall-timed wait began (ms) */
  private stallSince = 0
  /** epoch ms by which the current request must be complete (slow peers), if any */
  deadline?: number

  constructor(
    private readonly sock: Duplex,
    private readonly stallMs: number,
    private readonly highWater = 256 * 1024,
  ) {
    sock.on('data', (c: Buffer) => {
      this.chunks.push(c)
      this.buffered += c.length
      if (this.buffered >= this.highWater) sock.pause()
      this.notify()
    })
    sock.on('end', () => {
      this.ended = true
      this.notify()
    })
    sock.on('close', () => {
      this.ended = true
      if (this.stallTimer) clearTimeout(this.stallTimer)
      this.notify()
    })
    sock.on('error', (error: Error) => {
      this.failure = error
      this.notify()
    })
  }

  get available(): number {
    return this.buffered
  }

  get isEnded(): boolean {
    return this.ended
  }

  /**
   * The usual wait (stallMs, no deadline: a connection between requests, a client awaiting its
   * reply) shares one timer per reader instead of creating and clearing one per wait, and does
   * not even re-arm it: a wait only notes when it began. refresh() per wait re-inserted the timer
   * in its list every time (about 1.5 us of a relay text's CPU); now the timer, when it fires,
   * fails the wait pending then if it began stallMs ago or more, else sleeps for what is left.
   * A firing with no wait pending ends the timer (the next wait starts one); it ends with the
   * stream ('close') too.
   */
  private armStall(fire: () => void): void {
    this.onStall = fire
    this.stallSince = Date.now()
    if (this.stallTimer === undefined) this.startStallTimer(this.stallMs)
  }

  private startStallTimer(ms: number): void {
    this.stallTimer = setTimeout(() => {
      this.stallTimer = undefined
      const f = this.onStall
      if (f === undefined || this.ended) return
      const left = this.stallSince + this.stallMs - Date.now()
      if (left > 0) {
        this.startStallTimer(left)
        return
      }
      this.onStall = undefined
      f()
    }, ms)
  }

  private notify(): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }

  /** Waits until `n` bytes are buffered. False if the peer ended first (with fewer bytes). */
  async fill(n: number, stallMs = this.stallMs): Promise<boolean> {
    while (this.buffered < n) {
      if (this.failure) throw this.failure
      if (this.ended) return false
      this.sock.resume()
      let wait = stallMs
      if (this.deadline !== undefined) {
        const left = this.deadline - Date.now()
        if (left <= 0) throw new StallTimeout(stallMs, 'request not complete by its deadline')
        if (wait <= 0 || left < wait) wait = left
      }
      await new Promise<void>((resolve, reject) => {
        const fire = () => {
          this.wake = undefined
          reject(new StallTimeout(stallMs, this.deadline !== undefined && Date.now() >= this.deadline ? 'request not complete by its deadline' : undefined))
        }
        let timer: NodeJS.Timeout | undefined
        if (wait > 0 && wait === this.stallMs) this.armStall(fire)
        else if (wait > 0) timer = setTimeout(fire, wait)
        this.wake = () => {
          if (timer) clearTimeout(timer)
          this.onStall = undefined
          resolve()
        }
      })
    }
    return true
  }

  /** Waits at most `ms` for at least one byte; false when none came (no error). */
  async poll(ms: number): Promise<boolean> {
    if (this.buffered > 0) return true
    try {
      return await this.fill(1, ms)
    } catch (error) {
      if (error instanceof StallTimeout) return false
      throw error
    }
  }

  /** Up to `n` buffered bytes, not consumed. */
  peek(n: number): Buffer {
    const out: Buffer[] = []
    let need = n
    for (const c of this.chunks) {
      if (need <= 0) break
      const part = c.length <= need ? c : c.subarray(0, need)
      out.push(part)
      need -= part.length
    }
    return out.length === 1 ? out[0] : Buffer.concat(out)
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0)
    const first = this.chunks[0]
    let out: Buffer
    if (first.length === n) {
      this.chunks.shift()
      out = first
    } else if (first.length > n) {
      out = first.subarray(0, n)
      this.chunks[0] = first.subarray(n)
    } else {
      out = Buffer.allocUnsafe(n)
      let off = 0
      while (off < n) {
        const c = this.chunks[0]
        const k = Math.min(c.length, n - off)
        c.copy(out, off, 0, k)
        off += k
        if (k === c.length) this.chunks.shift()
        else this.chunks[0] = c.subarray(k)
      }
    }
    this.buffered -= n
    if (this.buffered < this.highWater) this.sock.resume()
    return out
  }

  /**
   * Exactly `n` bytes if they are already buffered, else undefined. A request that arrived in
   * one segment is parsed without a promise per field: the awaits of read() on bytes already at
   * hand were, with their garbage, a good part of a small text's cost.
   */
  readNow(n: number): Buffer | undefined {
    return this.buffered >= n ? this.take(n) : undefined
  }

  /** The oldest buffered chunk, not consumed (for a parser that takes a whole small request from it at once). */
  firstChunk(): Buffer | undefined {
    return this.chunks[0]
  }

  /** Exactly `n` bytes; throws EndOfStream if the peer ends first. Keep `n` small (bounded by the caller). */
  read(n: number): Promise<Buffer> {
    if (this.buffered >= n) return Promise.resolve(this.take(n))
    return this.readLater(n)
  }

  private async readLater(n: number): Promise<Buffer> {
    if (!(await this.fill(n))) throw new EndOfStream(this.buffered)
    return this.take(n)
  }

  /** Streams exactly `n` bytes to `sink` in chunks as they arrive, awaiting the sink (back-pressure). */
  async stream(n: number, sink: (chunk: Buffer) => void | Promise<void>): Promise<void> {
    let left = n
    while (left > 0) {
      if (this.buffered === 0 && !(await this.fill(1))) throw new EndOfStream(n - left)
      const k = Math.min(left, this.chunks[0].length)
      const chunk = this.take(k)
      left -= k
      // a sink that has nothing to wait for returns no promise, and costs no await per chunk
      const wait = sink(chunk)
      if (wait !== undefined) await wait
    }
  }

  /** Reads and drops `n` bytes. */
  async skip(n: number): Promise<void> {
    await this.stream(n, () => {})
  }
}

/** Writes to a socket, resolving once the bytes were handed to the kernel; waits for 'drain' under back-pressure. */
export function writeAll(sock: Duplex, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (sock.destroyed) {
      reject(new Error('socket closed'))
      return
    }
    sock.write(data, (error) => (error ? reject(error) : resolve()))
  })
}

/**
 * Writes a reply as writeFlow does, and tells when every byte of it was handed to the kernel (sent()).
 * A socket calls its write callbacks in order, so the last write's success vouches for all before it,
 * whatever happens to the socket afterwards; once it is destroyed, nothing else can tell: the writes it
 * dropped leave writableLength with their bytes (a reset peer leaves it at 0, as one that read all).
 */
export class ReplyWriter {
  private last: Promise<void> = Promise.resolve()

  constructor(private readonly sock: Duplex) {}

  write(data: Buffer): Promise<void> {
    if (this.sock.destroyed) return Promise.reject(new Error('socket closed'))
    let done!: (error?: Error | null) => void
    this.last = new Promise<void>((resolve, reject) => {
      done = (error) => (error ? reject(error) : resolve())
    })
    // awaited by sent(), if at all
    this.last.catch(() => {})
    return writeFlow(this.sock, data, done)
  }

  /** Resolves once everything written through this was handed to the kernel; rejects if the socket failed first. */
  sent(): Promise<void> {
    return this.last
  }
}

/** Writes without waiting for the flush callback unless the socket's buffer is full; `done` is the write's callback. */
export async function writeFlow(sock: Duplex, data: Buffer, done?: (error?: Error | null) => void): Promise<void> {
  if (sock.destroyed) throw new Error('socket closed')
  if (sock.write(data, done)) return
  await drained(sock)
}

/** Resolves on the socket's next 'drain' (after a write() that returned false); rejects if it closes or fails first. */
export function drained(sock: Duplex): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (error?: Error) => {
      sock.off('drain', onDrain)
      sock.off('close', onClose)
      sock.off('error', done)
      if (error) reject(error)
      else resolve()
    }
    const onDrain = () => done()
    const onClose = () => done(new Error('socket closed'))
    sock.on('drain', onDrain)
    sock.on('close', onClose)
    sock.on('error', done)
  })
}
