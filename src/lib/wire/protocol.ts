/**
 * The native mq wire protocol (docs/protocol.md): every frame is one text header line
 *   VERB ID key=value key=value ... [LEN]\n
 * followed by exactly LEN bytes of binary body (LEN omitted = 0). Values are percent-encoded
 * (space, =, % and control characters as %XX; decoded with decodeURIComponent), so names may hold any character and the stream stays binary-safe while
 * a human can still type frames into `openssl s_client`. Message headers travel as `h.NAME=VALUE`.
 */
export const PROTOCOL_VERSION = 1
/** a header line longer than this cannot be legitimate: the connection is closed */
export const MAX_HEADER_LINE = 64 * 1024

export interface Frame {
  verb: string
  id: number
  args: Record<string, string>
  body: Buffer
}

export class FrameError extends Error {
  constructor(
    readonly code: 'E_FRAME_MALFORMED' | 'E_FRAME_TOO_LARGE' | 'E_FRAME_BODY',
    message: string,
    /** true when the byte stream can no longer be trusted and the connection must close */
    readonly fatal: boolean,
    readonly id = 0,
  ) {
    super(message)
  }
}

const NL = 0x0a
const EMPTY = Buffer.alloc(0)

/** Percent-encodes only what would break a header line (space, =, %, controls): readable by eye, decodable by decodeURIComponent. */
export function encodeValue(v: string): string {
  return enc(v)
}

function enc(v: string): string {
  let plain = true
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i)
    if (c <= 32 || c === 37 || c === 61 || c === 127 || c > 127) {
      plain = false
      break
    }
  }
  if (plain) return v
  return v.replace(/[\s%=\x00-\x1f\x7f]/g, (c) => {
    const code = c.charCodeAt(0)
    return code < 0x80 ? `%${code.toString(16).toUpperCase().padStart(2, '0')}` : encodeURIComponent(c)
  })
}

/** Hot paths build `line` (VERB ID key=value..., values already encoded) themselves; this adds LEN and the body. */
export function encodeLine(line: string, body?: Buffer): Buffer {
  const len = body ? body.length : 0
  if (len === 0) return Buffer.from(line + '\n')
  line += ' ' + len + '\n'
  const head = Buffer.byteLength(line)
  const out = Buffer.allocUnsafe(head + len + 1)
  out.write(line, 0, head, 'utf8')
  body!.copy(out, head)
  out[head + len] = NL
  return out
}

/** Bodies from this size on are written as separate buffers after their header instead of being copied into one frame. */
export const BIG_BODY = 16 * 1024
export const NEWLINE = Buffer.from('\n')

/** The header line of a big frame whose body is written separately (followed by NEWLINE). */
export function encodeHead(line: string, len: number): Buffer {
  return Buffer.from(line + ' ' + len + '\n')
}

/** Encodes one frame; `args` values that are undefined are left out. */
export function encodeFrame(verb: string, id: number, args?: Record<string, string | number | boolean | undefined>, body?: Buffer): Buffer {
  let line = verb + ' ' + id
  if (args) {
    for (const k in args) {
      const v = args[k]
      if (v === undefined) continue
      line += ' ' + k + '=' + (typeof v === 'string' ? enc(v) : typeof v === 'number' ? v : v ? '1' : '0')
    }
  }
  const len = body ? body.length : 0
  if (len > 0) line += ' ' + len
  line += '\n'
  if (!body || len === 0) return Buffer.from(line)
  // a newline after the body keeps a terminal readable; decoders skip it as a blank line
  const head = Buffer.byteLength(line)
  const out = Buffer.allocUnsafe(head + len + 1)
  out.write(line, 0, head, 'utf8')
  body.copy(out, head)
  out[head + len] = NL
  return out
}

/** The message headers (h.NAME) of a frame's args. */
export function frameHeaders(args: Record<string, string>): Record<string, string> {
  const h: Record<string, string> = {}
  for (const k in args) if (k.startsWith('h.')) h[k.slice(2)] = args[k]
  return h
}

/** No headers: one shared, frozen object instead of a new one per message (the broker never changes a message's headers in place). */
export const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({})

/** frameHeaders, or NO_HEADERS when the frame has none (the broker's publish path). */
export function frameHeadersOrNone(args: Record<string, string>): Record<string, string> {
  for (const k in args) if (k.startsWith('h.')) return frameHeaders(args)
  return NO_HEADERS as Record<string, string>
}

const HEADER_NAME = /^[A-Za-z0-9_.:-]{1,128}$/

/** Message header names a frame can carry (h.NAME); others are refused at publish. */
export function isHeaderName(k: string): boolean {
  return HEADER_NAME.test(k)
}

/**
 * Message headers as the ` h.NAME=VALUE` arguments of one header line (names checked, values encoded).
 * Batch frames carry them once for all their records (docs/protocol.md, "Batches").
 */
export function encodeHeaderArgs(headers: Record<string, string>): string {
  let out = ''
  for (const k in headers) {
    if (!HEADER_NAME.test(k)) throw new FrameError('E_FRAME_MALFORMED', `header name ${JSON.stringify(k)} is not allowed (letters, digits, _ . : - only)`, false)
    out += ' h.' + k + '=' + enc(headers[k])
  }
  return out
}

/** true when two header sets have the same names and values (a batch's records must share theirs) */
export function sameHeaders(a: Record<string, string>, b: Record<string, string>): boolean {
  if (a === b) return true
  let n = 0
  for (const k in a) {
    if (b[k] !== a[k] || !Object.prototype.hasOwnProperty.call(b, k)) return false
    n++
  }
  for (const _ in b) n--
  return n === 0
}

/** a batch's shared header arguments are at most this long (bigger headers travel per message) */
export const BATCH_HEADER_ARGS_MAX = 4096

export function headerArgs(headers: Record<string, string> | undefined, into: Record<string, string | number | boolean | undefined>): void {
  if (!headers) return
  for (const k in headers) {
    if (!HEADER_NAME.test(k)) throw new FrameError('E_FRAME_MALFORMED', `header name ${JSON.stringify(k)} is not allowed (letters, digits, _ . : - only)`, false)
    into[`h.${k}`] = headers[k]
  }
}

/** Bodies up to this size get their whole buffer at once; bigger ones are kept as the pieces that arrive and joined once complete. */
const BODY_START = 64 * 1024

/**
 * Bodies from this size on are allocated in shared memory (a SharedArrayBuffer): the broker's store
 * writer thread (store-worker.ts) then reads a big durable body where it is instead of getting a copy
 * of it. Bodies are never written to once complete, so sharing them is safe.
 */
export const SHARED_BODY = 64 * 1024

/** A body's buffer: shared memory from SHARED_BODY on (see there), the ordinary heap below. */
export function allocBody(n: number): Buffer {
  return n >= SHARED_BODY ? Buffer.from(new SharedArrayBuffer(n)) : Buffer.allocUnsafe(n)
}

/**
 * A body's buffer where no thread shares it (a client): a SharedArrayBuffer is zero-filled when
 * allocated and copied into by V8's relaxed per-word copy, two passes over the body for nothing.
 */
function allocPlainBody(n: number): Buffer {
  return Buffer.allocUnsafe(n)
}

/**
 * Copies src into dst at `at`. Into shared memory Buffer#copy takes V8's relaxed word-by-word copy (safe
 * against a concurrent reader, which a body being filled never has), about half the speed of memcpy;
 * Buffer#fill with a value exactly as long as the range is one native memcpy.
 */
function copyInto(src: Buffer, dst: Buffer, at: number): number {
  const n = src.length
  if (n === 0) return 0
  if (dst.buffer instanceof SharedArrayBuffer) dst.fill(src, at, at + n)
  else src.copy(dst, at)
  return n
}

/** pieces of a big body smaller than this are copied into a segment instead of being kept (see FrameParser.keep) */
const PIECE_MIN = 4 * 1024

/**
 * Incremental decoder. The body length is checked against maxPayload as soon as the header line
 * arrives, before a single body byte is buffered. A body up to BODY_START gets its buffer at once;
 * a bigger one is kept as the pieces of the chunks that carry it and joined into its buffer once it is
 * complete: memory follows the bytes actually received, never the length a client merely claims, and
 * each body byte is copied once (growing one buffer by doubling copied a 1 MiB body's first half
 * again, into fresh memory each time). A completed body is handed over without a copy.
 */
export class FrameParser {
  private head: Buffer = EMPTY
  /** the pending body's buffer (up to BODY_START), or the segment small pieces of a bigger one are copied into */
  private body: Buffer = EMPTY
  private bodyLen = 0
  private bodyFill = 0
  /** a big body (over BODY_START): its pieces so far, in order; null for a body with its own buffer */
  private parts: Buffer[] | null = null
  /** bytes held for a big body: the buffers its pieces keep alive, and its current segment */
  private held = 0
  /** bytes of the current segment (this.body) filled, for a big body */
  private segFill = 0
  private pending: Frame | null = null
  /** a non-fatal error of the pending frame, reported once its body has been skipped */
  private pendingError: FrameError | null = null
  /** true while a frame has started but not completed (for slow-drip detection) */
  get partial(): boolean {
    return this.head.length > 0 || this.pending !== null
  }

  /** true while an incomplete header line is buffered */
  get headerPartial(): boolean {
    return this.head.length > 0
  }

  /** length of the body being received (0 = none) */
  get bodyPending(): number {
    return this.pending ? this.bodyLen : 0
  }

  /** bytes currently allocated for the pending body */
  get bodyAllocated(): number {
    return this.parts ? this.held : this.body.length
  }

  /** counts bodies started, so a watchdog can tell one long body from many short ones */
  bodySeq = 0

  private readonly alloc: (n: number) => Buffer
  /** bodies up to this size get their whole buffer when their header arrives */
  private readonly bodyStart: number

  /**
   * `sharedBodies`: big bodies in shared memory (allocBody), for the broker's store writer thread.
   * `wholeBodies`: the peer is trusted with its lengths (the broker, seen from a client; still at most
   * maxPayload): every body gets its buffer when its header arrives and each chunk is copied in as it
   * comes. No view of a chunk is then kept past push(), so the caller may reuse the chunk's memory.
   */
  constructor(
    private readonly maxPayload: number,
    opts: {sharedBodies?: boolean; wholeBodies?: boolean} = {},
  ) {
    this.alloc = opts.sharedBodies ? allocBody : allocPlainBody
    this.bodyStart = opts.wholeBodies ? Infinity : BODY_START
  }

  /** Feeds bytes; calls onFrame per complete frame and onError per rejected frame; throws a fatal FrameError. */
  push(chunk: Buffer, onFrame: (f: Frame) => void, onError: (e: FrameError) => void): void {
    let off = 0
    while (off < chunk.length) {
      if (this.pending) {
        const n = Math.min(this.bodyLen - this.bodyFill, chunk.length - off)
        if (this.parts) this.keep(chunk, off, n)
        else if (this.bodyLen >= SHARED_BODY) copyInto(chunk.subarray(off, off + n), this.body, this.bodyFill)
        else chunk.copy(this.body, this.bodyFill, off, off + n)
        this.bodyFill += n
        off += n
        if (this.bodyFill === this.bodyLen) {
          const f = this.pending
          f.body = this.parts ? this.joinParts() : this.body
          const err = this.pendingError
          this.pending = null
          this.pendingError = null
          this.body = EMPTY
          if (err) onError(err)
          else onFrame(f)
        }
        continue
      }
      const nl = chunk.indexOf(NL, off)
      if (nl < 0) {
        if (this.head.length + chunk.length - off > MAX_HEADER_LINE) {
          throw new FrameError('E_FRAME_MALFORMED', `header line longer than ${MAX_HEADER_LINE} bytes`, true)
        }
        this.head = this.head.length ? Buffer.concat([this.head, chunk.subarray(off)]) : Buffer.from(chunk.subarray(off))
        return
      }
      let line: string
      if (this.head.length) {
        const lineBuf = Buffer.concat([this.head, chunk.subarray(off, nl)])
        this.head = EMPTY
        if (lineBuf.length > MAX_HEADER_LINE) throw new FrameError('E_FRAME_MALFORMED', `header line longer than ${MAX_HEADER_LINE} bytes`, true)
        line = lineBuf.toString('utf8')
      } else {
        if (nl - off > MAX_HEADER_LINE) throw new FrameError('E_FRAME_MALFORMED', `header line longer than ${MAX_HEADER_LINE} bytes`, true)
        // decoded straight from the chunk: no Buffer view per frame
        line = chunk.toString('utf8', off, nl)
      }
      off = nl + 1
      if (line.endsWith('\r')) line = line.slice(0, -1)
      if (line.trim() === '') continue // blank lines are allowed between frames (hand typing)
      const frame = this.parseHeader(line)
      const len = this.parsedLen
      if (len === 0) {
        if (this.parsedError) onError(this.parsedError)
        else onFrame(frame)
        continue
      }
      this.pending = frame
      this.pendingError = this.parsedError
      this.bodySeq++
      this.bodyLen = len
      this.bodyFill = 0
      if (len <= this.bodyStart) this.body = this.alloc(len)
      else {
        this.parts = []
        this.held = 0
        this.segFill = 0
        this.body = EMPTY
      }
    }
  }

  /**
   * n bytes of a big body at chunk[off]: kept as a view of the chunk when that holds no more than twice
   * as much memory as the piece and the piece is not tiny, otherwise copied into a segment (at most
   * BODY_START, never past the body's end): what is held stays within twice the bytes received plus one
   * segment, whatever the sizes of the chunks a client sends.
   */
  private keep(chunk: Buffer, off: number, n: number): void {
    const parts = this.parts!
    if (n >= PIECE_MIN && chunk.buffer.byteLength <= 2 * n) {
      this.closeSegment()
      parts.push(chunk.subarray(off, off + n))
      this.held += chunk.buffer.byteLength
      return
    }
    // body bytes still to come, this piece included (bodyFill counts the piece only after this call)
    let rest = this.bodyLen - this.bodyFill
    while (n > 0) {
      if (this.segFill === this.body.length) {
        this.closeSegment()
        this.body = Buffer.allocUnsafe(Math.min(BODY_START, rest))
        this.held += this.body.length
      }
      const k = Math.min(n, this.body.length - this.segFill)
      chunk.copy(this.body, this.segFill, off, off + k)
      this.segFill += k
      off += k
      n -= k
      rest -= k
    }
  }

  /**
   * the current segment's filled part becomes the next piece; its unfilled rest stays the segment, so
   * small pieces between kept ones never make a fresh segment each (which would hold 64 KiB per byte)
   */
  private closeSegment(): void {
    if (this.segFill === 0) return
    this.parts!.push(this.body.subarray(0, this.segFill))
    this.body = this.body.subarray(this.segFill)
    this.segFill = 0
  }

  /** the complete big body: its pieces copied once into its own buffer */
  private joinParts(): Buffer {
    this.closeSegment()
    const out = this.alloc(this.bodyLen)
    let p = 0
    for (const b of this.parts!) p += copyInto(b, out, p)
    this.parts = null
    this.held = 0
    return out
  }

  /** body length and non-fatal error of the frame parseHeader just returned (fields, not a result object per frame) */
  private parsedLen = 0
  private parsedError: FrameError | null = null

  /** Parses a header line into a frame with an empty body; sets parsedLen and parsedError. */
  private parseHeader(line: string): Frame {
    // hand-rolled single pass: this runs once per frame on both ends, so no split/regex/arrays here
    const n = line.length
    let p = 0
    while (p < n && line.charCodeAt(p) === 32) p++
    let q = line.indexOf(' ', p)
    if (q < 0) q = n
    const rawVerb = line.slice(p, q)
    let verb = rawVerb
    if (!isVerb(verb)) {
      verb = verb.toUpperCase()
      if (!isVerb(verb)) throw new FrameError('E_FRAME_MALFORMED', `bad verb ${JSON.stringify(rawVerb.slice(0, 40))}: expected e.g. "PUBLISH 1 exchange=x key=y 5"`, true)
    }
    let id = 0
    let len = 0
    let index = 0
    let error: FrameError | null = null
    const args: Record<string, string> = {}
    p = q
    for (;;) {
      while (p < n && line.charCodeAt(p) === 32) p++
      if (p >= n) break
      q = line.indexOf(' ', p)
      if (q < 0) q = n
      index++
      const eq = line.indexOf('=', p)
      if (eq < 0 || eq > q) {
        const t = line.slice(p, q)
        let rest = q
        while (rest < n && line.charCodeAt(rest) === 32) rest++
        const last = rest >= n
        if (index === 1 && isDigits(t, 15)) {
          id = Number(t)
        } else if (last && isDigits(t, 12)) {
          len = Number(t)
          if (len > this.maxPayload) {
            // we cannot skip the body without reading it: the stream is no longer trusted
            throw new FrameError('E_FRAME_TOO_LARGE', `frame body of ${len} bytes exceeds the maximum payload of ${this.maxPayload} bytes`, true, id)
          }
        } else {
          throw new FrameError('E_FRAME_MALFORMED', `bad token ${JSON.stringify(t.slice(0, 40))} in ${verb}: arguments are key=value and the body length comes last`, true, id)
        }
      } else {
        const key = knownKey(line, p, eq) ?? line.slice(p, eq)
        const raw = line.slice(eq + 1, q)
        if (raw.indexOf('%') < 0) args[key] = raw
        else {
          try {
            args[key] = decodeURIComponent(raw)
          } catch {
            error ??= new FrameError('E_FRAME_MALFORMED', `bad percent-encoding in argument ${JSON.stringify(key)} of ${verb}`, false, id)
          }
        }
      }
      p = q
    }
    this.parsedLen = len
    this.parsedError = error
    return {args, body: EMPTY, id, verb}
  }
}

/**
 * The argument names of the hot frames (PUBLISH, DELIVER, CONFIRM, OK, ACK), by length. A key taken as
 * a slice of the line is a fresh string that V8 must look up in its string table before it can be a
 * property name, once per argument per frame; a match returns the literal, already internalized.
 */
const KNOWN_KEYS: (string[] | undefined)[] = []
for (const k of ['tag', 'tags', 'consumer', 'queue', 'queues', 'exchange', 'key', 'message_id', 'redelivered', 'count', 'ts', 'upto', 'id', 'code', 'message', 'hint', 'type', 'empty']) (KNOWN_KEYS[k.length] ??= []).push(k)

function knownKey(line: string, from: number, to: number): string | undefined {
  const list = KNOWN_KEYS[to - from]
  if (list === undefined) return undefined
  for (let i = 0; i < list.length; i++) if (line.startsWith(list[i], from)) return list[i]
  return undefined
}

function isVerb(v: string): boolean {
  if (v.length < 2 || v.length > 32) return false
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i)
    if (!((c >= 65 && c <= 90) || c === 95)) return false
  }
  return true
}

function isDigits(v: string, max: number): boolean {
  if (v.length === 0 || v.length > max) return false
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i)
    if (c < 48 || c > 57) return false
  }
  return true
}

// ---- batch frames (docs/protocol.md, "Batches") ------------------------------------------------
// PUBLISH_BATCH and DELIVERS carry many messages in one frame body of length-prefixed records
// (big-endian): one header line, one parse and one routing decision for dozens of small messages.

/** a batch is closed once its body reaches this size (bigger batches save little and hold more memory) */
export const BATCH_BYTES = 16 * 1024
/** a batch never holds more records than this */
export const BATCH_MAX_COUNT = 4096
const U16_MAX = 0xffff
/** strings up to this many UTF-16 units are tried as ASCII first */
const SHORT_ASCII = 64

/** batches are cut from slabs this big: a batch costs its own bytes, not a fresh 17 KiB buffer */
const SLAB_BYTES = 64 * 1024
/** room kept past BATCH_BYTES when a batch starts: the record that takes a batch past it (bodies up to 1 KiB fit) */
const SMALL_RECORD = 2 * 1024

/**
 * A buffer frames are cut from, and how many of them are still out: handed to a socket that may not
 * have written them yet. Its bytes are written again only once none is out (see Slabs).
 */
export class Slab {
  /** frames cut from this slab and handed out whose written() callback has not run yet */
  out = 0
  /** no longer its owner's current slab: it goes back to the spares once out reaches 0 */
  retired = false
  constructor(
    readonly buf: Buffer,
    private readonly pool: Slabs,
  ) {}

  /**
   * Counts a frame cut from this slab as out; the returned callback (a socket write's callback) gives
   * it back. Only the first call counts, so a callback run twice cannot free a slab still in use.
   */
  lend(): (err?: unknown) => void {
    this.out++
    let back = false
    return () => {
      if (back) return
      back = true
      if (--this.out === 0 && this.retired) this.pool.put(this)
    }
  }
}

/**
 * A connection's output slabs, reused once every frame cut from them has been written. A fresh 64 KiB
 * buffer per slab made the broker allocate external memory in proportion to the bytes it delivered,
 * and the mark-compacts that memory forced were a fifth of its CPU at 1 KiB messages.
 */
export class Slabs {
  private spare: Slab[] = []
  /** released (an idle connection): slabs whose frames come back now are left to the GC */
  private idle = false
  constructor(
    readonly size: number,
    /** spare slabs kept at most: more than one socket backlog's worth is memory for nothing */
    private readonly keep: number,
  ) {}

  /** an idle slab (a spare one, else a new one) of at least n bytes */
  get(n = this.size): Slab {
    this.idle = false
    if (n <= this.size) {
      const s = this.spare.pop()
      if (s) {
        s.retired = false
        return s
      }
    }
    return new Slab(Buffer.allocUnsafeSlow(Math.max(n, this.size)), this)
  }

  /** a slab its owner no longer cuts frames from: a spare once none of them is out */
  retire(s: Slab): void {
    s.retired = true
    if (s.out === 0) this.put(s)
  }

  /** @internal a retired slab with nothing out */
  put(s: Slab): void {
    if (!this.idle && s.buf.length === this.size && this.spare.length < this.keep) this.spare.push(s)
  }

  /**
   * Keeps at most `n` spares: a connection whose backlog has drained needs few, and one that still
   * sends a message a second never goes idle, so without this it would hold its peak's spares for good.
   */
  trim(n: number): void {
    if (this.spare.length > n) this.spare.length = n
  }

  /** drops the spares and keeps none until the next get() (an idle connection) */
  clear(): void {
    this.spare = []
    this.idle = true
  }

  /** spare slabs held (tests) */
  get spares(): number {
    return this.spare.length
  }
}

/**
 * spare slabs kept per connection: a consumer keeping up has a few slabs' frames in its socket at a
 * time; one that lags holds its backlog's slabs out anyway, and the spares would be memory for nothing
 */
export const SPARE_SLABS = 4

/**
 * Appends records to a slab that leaves room in front for the frame's header line, so a closed
 * batch is one contiguous frame without a copy. open() starts a batch, finish() closes it.
 *
 * The next batch starts where the last one ended; a handed-out frame is never written again until
 * the caller says it is done with it (written()): the socket may still hold it. A fresh buffer per
 * batch made a paced broker allocate 85 MB/s of 17 KiB buffers for one-record batches, and the
 * mark-compacts that external memory forced were the tail of its confirm latency; a fresh slab per
 * ~3 full batches still cost the broker 1-4 us per message in GC. A caller that never calls
 * written() (the client) gets a fresh slab whenever one is used up.
 */
class RecordBuffer {
  private readonly slabs = new Slabs(SLAB_BYTES, SPARE_SLABS)
  private slab: Slab | null = null
  protected buf: Buffer = EMPTY
  protected fill = 0
  /** where the open batch's records start */
  private head = 0
  /** where the open batch's header room starts */
  private base = 0
  count = 0

  /** bytes of records so far */
  get bytes(): number {
    return this.fill - this.head
  }

  /**
   * Starts a batch whose header line will be at most headRoom bytes. A batch of small records closes
   * just past BATCH_BYTES, so one starts on a fresh slab unless that much fits: a batch that outgrew
   * the end of its slab was copied to a new one (room()), a copy of a third of the producer's batches
   * that was 7% of its CPU at 256 B. A slab none of whose frames is out starts again at its beginning.
   */
  protected open(headRoom: number): void {
    if (this.slab !== null && this.slab.out === 0) this.fill = 0
    if (this.buf.length - this.fill < headRoom + BATCH_BYTES + SMALL_RECORD) this.take(SLAB_BYTES)
    this.base = this.fill
    this.head = this.fill + headRoom
    this.fill = this.head
    this.count = 0
  }

  /** moves on to another slab of at least n bytes */
  private take(n: number): void {
    // the next slab first: the one retired may still be copied from (room())
    const next = this.slabs.get(n)
    if (this.slab) this.slabs.retire(this.slab)
    this.slab = next
    this.buf = next.buf
    this.fill = 0
  }

  protected room(n: number): void {
    // +1: the newline after the body
    if (this.fill + n + 1 <= this.buf.length) return
    const used = this.fill - this.base
    const old = this.buf
    const from = this.base
    const to = this.fill
    this.take(2 * (used + n + 1))
    old.copy(this.buf, 0, from, to)
    this.head -= from
    this.fill = used
    this.base = 0
  }

  protected str16(s: string): void {
    const b = this.buf
    const at = this.fill
    const len = s.length
    // names and ids are short ASCII: a byte loop beats a call into the UTF-8 encoder (which was
    // 15% of the broker's CPU at 400k deliveries/s, three strings per record)
    if (len <= SHORT_ASCII) {
      let i = 0
      for (; i < len; i++) {
        const c = s.charCodeAt(i)
        if (c > 0x7f) break
        b[at + 2 + i] = c
      }
      if (i === len) {
        b[at] = len >>> 8
        b[at + 1] = len & 0xff
        this.fill = at + 2 + len
        return
      }
    }
    const n = b.write(s, at + 2, 'utf8')
    b.writeUInt16BE(n, at)
    this.fill = at + 2 + n
  }

  protected body32(b: Buffer): void {
    const buf = this.buf
    const at = this.fill
    const n = b.length
    put32(buf, at, n)
    // TypedArray set: the copy without Buffer.copy's argument checks (room() made the space)
    buf.set(b, at + 4)
    this.fill = at + 4 + n
  }

  /** the records of the open batch (a view: valid until the next batch is opened) */
  records(): Buffer {
    return this.buf.subarray(this.head, this.fill)
  }

  /**
   * Closes the batch: `line` (VERB ID args, without LEN) goes in front, LEN and the trailing
   * newline around the records. The returned frame's bytes are never written again.
   */
  finish(line: string): Buffer {
    line += ' ' + (this.fill - this.head) + '\n'
    const start = this.head - Buffer.byteLength(line)
    if (start < this.base) throw new Error('batch header line longer than the room kept for it')
    this.buf.write(line, start, 'utf8')
    this.buf[this.fill] = NL
    const out = this.buf.subarray(start, this.fill + 1)
    this.fill++
    this.base = this.head = this.fill
    this.count = 0
    this.done = this.slab!.lend()
    return out
  }

  /**
   * The callback that gives the last finished frame's bytes back: call it once they were copied, or
   * pass it to the socket write of the frame itself (it runs once the socket is done with them,
   * written or destroyed). Until then its slab is never written again.
   */
  written(): (err?: unknown) => void {
    return this.done
  }

  private done: (err?: unknown) => void = () => {}

  /** drops the open batch: its bytes were never handed out, so the next batch reuses them */
  reset(): void {
    this.fill = this.head = this.base
    this.count = 0
  }

  /** keeps at most `n` spare slabs (a connection whose backlog has drained) */
  trimSpares(n: number): void {
    this.slabs.trim(n)
  }

  /** spare slabs held (tests) */
  get spareSlabs(): number {
    return this.slabs.spares
  }

  /** gives the slabs back (an idle connection); only between batches */
  release(): void {
    if (this.count > 0 || this.fill !== this.base) return
    if (this.slab) this.slabs.retire(this.slab)
    this.slabs.clear()
    this.slab = null
    this.buf = EMPTY
    this.fill = this.head = this.base = 0
  }
}

/** room for a header line's numbers: id (15 digits), count (4), LEN (10) and their separators */
const NUMBERS_ROOM = 40

/** Body of a PUBLISH_BATCH: per message `u16 idLen, id (UTF-8, 0 = the broker names it), u32 len, body`. */
export class PublishBatchWriter extends RecordBuffer {
  /** the header line up to the id, and after it (values encoded) */
  private exArgs = ''

  /** Starts a batch to one exchange and routing key; `headerArgs` (encodeHeaderArgs) are every record's headers. */
  start(exchange: string, routingKey: string, headerArgs = ''): void {
    this.exArgs = ' exchange=' + enc(exchange) + ' key=' + enc(routingKey) + headerArgs + ' count='
    this.open('PUBLISH_BATCH '.length + Buffer.byteLength(this.exArgs) + NUMBERS_ROOM)
  }

  /** The whole PUBLISH_BATCH frame with request id `id`. */
  frame(id: number): Buffer {
    return this.finish('PUBLISH_BATCH ' + id + this.exArgs + this.count)
  }

  /** false when this message cannot go in a batch record (an id too long for u16) */
  add(messageId: string | undefined, body: Buffer): boolean {
    const id = messageId ?? ''
    if (id.length * 3 > U16_MAX) return false
    this.room(2 + id.length * 3 + 4 + body.length)
    if (id) this.str16(id)
    else {
      this.buf[this.fill] = 0
      this.buf[this.fill + 1] = 0
      this.fill += 2
    }
    this.body32(body)
    this.count++
    return true
  }
}

/** Decodes a PUBLISH_BATCH body; bodies are views of it (no copy). Throws a non-fatal FrameError: LEN kept the stream in step. */
export function parsePublishBatch(body: Buffer, count: number, id: number): {ids: (string | undefined)[]; bodies: Buffer[]} {
  const ids: (string | undefined)[] = new Array(count)
  const bodies: Buffer[] = new Array(count)
  let p = 0
  const bad = (what: string) => new FrameError('E_FRAME_BODY', `PUBLISH_BATCH body is malformed: ${what}`, false, id)
  for (let i = 0; i < count; i++) {
    if (p + 2 > body.length) throw bad(`record ${i + 1} of ${count} is missing`)
    const idLen = body.readUInt16BE(p)
    p += 2
    if (p + idLen + 4 > body.length) throw bad(`record ${i + 1} is cut short`)
    ids[i] = idLen === 0 ? undefined : body.toString('utf8', p, p + idLen)
    p += idLen
    const len = body.readUInt32BE(p)
    p += 4
    if (p + len > body.length) throw bad(`record ${i + 1} claims ${len} bytes, more than the frame holds`)
    bodies[i] = body.subarray(p, p + len)
    p += len
  }
  if (p !== body.length) throw bad(`${body.length - p} bytes after the ${count} records that count= announces`)
  return {bodies, ids}
}

export interface BatchDelivery {
  tag: number
  redelivered: boolean
  count: number
  ts: number
  exchange: string
  key: string
  messageId: string
  body: Buffer
}

/**
 * Body of a DELIVERS frame: per message `u48 tag, u8 flags (1 = redelivered), u32 delivery count,
 * u48 timestamp ms, u16+exchange, u16+routing key, u16+message id, u32+body`.
 */
export class DeliveryBatchWriter extends RecordBuffer {
  private prefix = ''

  /** Starts a batch of deliveries to one consumer; `headerArgs` (encodeHeaderArgs) are every record's headers. */
  start(consumerTag: string, headerArgs = ''): void {
    this.prefix = 'DELIVERS 0 consumer=' + enc(consumerTag) + headerArgs + ' count='
    this.open(Buffer.byteLength(this.prefix) + NUMBERS_ROOM)
  }

  /** The whole DELIVERS frame. */
  frame(): Buffer {
    return this.finish(this.prefix + this.count)
  }

  /** false when the message cannot go in a record (a routing key too long for u16): send it as DELIVER */
  add(tag: number, redelivered: boolean, count: number, ts: number, exchange: string, key: string, messageId: string, body: Buffer): boolean {
    if ((exchange.length + key.length + messageId.length) * 3 > U16_MAX || key.length * 3 > U16_MAX) return false
    this.room(6 + 1 + 4 + 6 + 6 + (exchange.length + key.length + messageId.length) * 3 + 4 + body.length)
    const b = this.buf
    const at = this.fill
    // by hand, as parseDeliveries reads them: writeUIntBE's checks cost more than the writes
    put48(b, at, tag)
    b[at + 6] = redelivered ? 1 : 0
    put32(b, at + 7, count)
    put48(b, at + 11, ts)
    this.fill = at + 17
    this.str16(exchange)
    this.str16(key)
    this.str16(messageId)
    this.body32(body)
    this.count++
    return true
  }
}

/** a message id's last characters left out of the prefix kept for the records after it (MessageIds' counter: 3 hex digits) */
const ID_TAIL_KEPT = 3
/** the longest tail decoded character by character after a kept prefix; longer ones take the UTF-8 decoder */
const ID_TAIL = 8

/** an unsigned 32-bit integer as 4 big-endian bytes, by hand: writeUInt32BE's checks cost more than the writes */
function put32(b: Buffer, at: number, v: number): void {
  b[at] = v >>> 24
  b[at + 1] = (v >>> 16) & 0xff
  b[at + 2] = (v >>> 8) & 0xff
  b[at + 3] = v & 0xff
}

/** 4 big-endian bytes as an unsigned integer */
function get32(b: Buffer, at: number): number {
  return ((b[at] << 24) >>> 0) + (b[at + 1] << 16) + (b[at + 2] << 8) + b[at + 3]
}

/** an unsigned integer below 2^48 as 6 big-endian bytes (delivery tags and timestamps) */
function put48(b: Buffer, at: number, v: number): void {
  const hi = Math.floor(v / 0x100000000)
  const lo = v >>> 0
  b[at] = (hi >>> 8) & 0xff
  b[at + 1] = hi & 0xff
  b[at + 2] = lo >>> 24
  b[at + 3] = (lo >>> 16) & 0xff
  b[at + 4] = (lo >>> 8) & 0xff
  b[at + 5] = lo & 0xff
}

/** 6 big-endian bytes as an unsigned integer */
function get48(b: Buffer, at: number): number {
  return (b[at] * 0x100 + b[at + 1]) * 0x100000000 + ((b[at + 2] << 24) >>> 0) + (b[at + 3] << 16) + (b[at + 4] << 8) + b[at + 5]
}

/** Decodes a DELIVERS body record by record; throws FrameError on a body that does not add up. */
export function parseDeliveries(body: Buffer, count: number, each: (d: BatchDelivery) => void): void {
  eachDelivery(body, count, (tag, redelivered, n, ts, exchange, key, messageId, b) => each({body: b, count: n, exchange, key, messageId, redelivered, tag, ts}))
}

/** parseDeliveries with each record's fields as arguments: a client builds its own delivery object, without one in between */
export function eachDelivery(body: Buffer, count: number, each: (tag: number, redelivered: boolean, count: number, ts: number, exchange: string, key: string, messageId: string, body: Buffer) => void): void {
  let p = 0
  const bad = (what: string) => new FrameError('E_FRAME_BODY', `DELIVERS body is malformed: ${what}`, false)
  const str = (): string => {
    if (p + 2 > body.length) throw bad('a record is cut short')
    const n = (body[p] << 8) | body[p + 1]
    p += 2
    if (p + n > body.length) throw bad('a record is cut short')
    const s = n === 0 ? '' : body.toString('utf8', p, p + n)
    p += n
    return s
  }
  // a batch's records mostly share their exchange and routing key: each field's reader reuses the
  // previous record's string when the bytes match, instead of decoding (and allocating) it again
  const repeated = (): (() => string) => {
    let prevAt = -1
    let prevLen = 0
    let prev = ''
    return () => {
      if (prevAt >= 0 && prevLen <= SHORT_ASCII && p + 2 + prevLen <= body.length && ((body[p] << 8) | body[p + 1]) === prevLen) {
        let i = 0
        while (i < prevLen && body[p + 2 + i] === body[prevAt + i]) i++
        if (i === prevLen) {
          p += 2 + prevLen
          return prev
        }
      }
      prevAt = p + 2
      prev = str()
      prevLen = p - prevAt
      return prev
    }
  }
  const exchangeField = repeated()
  const keyField = repeated()
  // Message ids from a counter (MessageIds: the broker's own, mq send's) differ from the record
  // before only in their last characters: the shared ASCII prefix's string is kept and only the
  // tail is decoded, instead of a call into the UTF-8 decoder per record (the consumer's top item).
  let idRefAt = -1
  let idPrefixLen = 0
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength)
  let idPrefix = ''
  const idField = (): string => {
    if (idRefAt >= 0 && p + 2 <= body.length) {
      const n = (body[p] << 8) | body[p + 1]
      const at = p + 2
      if (n > idPrefixLen && n - idPrefixLen <= ID_TAIL && at + n <= body.length) {
        // the prefix compared 4 bytes at a time, then byte by byte (a UUID's prefix is 33 bytes)
        let i = 0
        while (i + 4 <= idPrefixLen && view.getUint32(at + i) === view.getUint32(idRefAt + i)) i += 4
        while (i < idPrefixLen && body[at + i] === body[idRefAt + i]) i++
        if (i === idPrefixLen && n - i === ID_TAIL_KEPT) {
          // the usual tail (MessageIds' counter digits): one string of three characters, not three concatenations
          const a = body[at + i]
          const b = body[at + i + 1]
          const c = body[at + i + 2]
          if ((a | b | c) <= 0x7f) {
            p = at + n
            return idPrefix + String.fromCharCode(a, b, c)
          }
        }
        if (i === idPrefixLen) {
          let tail = ''
          for (let j = at + i; j < at + n; j++) {
            const c = body[j]
            if (c > 0x7f) {
              tail = ''
              break
            }
            tail += String.fromCharCode(c)
          }
          if (tail.length === n - idPrefixLen) {
            p = at + n
            return idPrefix + tail
          }
        }
      }
    }
    const at = p + 2
    const s = str()
    const n = p - at
    // the next record's reference: an ASCII id long enough for its prefix to be worth keeping
    idRefAt = -1
    if (n >= 16 && n === s.length) {
      let ascii = true
      for (let j = at; j < p; j++) if (body[j] > 0x7f) ascii = false
      if (ascii) {
        idRefAt = at
        idPrefixLen = n - ID_TAIL_KEPT
        idPrefix = s.slice(0, idPrefixLen)
      }
    }
    return s
  }
  for (let i = 0; i < count; i++) {
    if (p + 17 > body.length) throw bad(`record ${i + 1} of ${count} is missing`)
    const tag = get48(body, p)
    const redelivered = (body[p + 6] & 1) === 1
    const n = get32(body, p + 7)
    const ts = get48(body, p + 11)
    p += 17
    const exchange = exchangeField()
    const key = keyField()
    const messageId = idField()
    if (p + 4 > body.length) throw bad('a record is cut short')
    // by hand, like the fields above: readUInt32BE's checks cost more than the read (bounds checked just above)
    const len = get32(body, p)
    p += 4
    if (p + len > body.length) throw bad(`record ${i + 1} claims ${len} bytes, more than the frame holds`)
    each(tag, redelivered, n, ts, exchange, key, messageId, body.subarray(p, p + len))
    p += len
  }
  if (p !== body.length) throw bad(`${body.length - p} bytes after the ${count} records that count= announces`)
}
