import Database from 'better-sqlite3'
import {chmodSync, closeSync, existsSync, fdatasync, fstatSync, ftruncateSync, openSync, readFileSync, readSync, renameSync, writeFileSync, writeSync, writevSync} from 'node:fs'
import {crc32} from 'node:zlib'

import {TempFailError} from '../errors.js'
import type {StoredMessage} from './store.js'

/**
 * The relay's journal of acknowledged messages (SQLite stores only). A message is appended here, in
 * one write with its id, before its acknowledgement, and moved into relay_messages by the store
 * every JOURNAL_FLUSH_MS (hundreds per transaction) and before anything reads or deletes messages: an INSERT
 * and its commit per text (WAL frames, six fcntl locks) was about half of a text's CPU. Contents are
 * stored exactly as in relay_messages: the clients' end-to-end ciphertext, never plaintext.
 *
 * Files: `<base>` (appended to) and `<base>.prev` (the one before, kept one rotation longer so that
 * what was moved into the database is still here until the checkpointer has synced it), both 0600,
 * and `<base>.lock`, held for the process's life (an exclusive SQLite lock: the kernel drops it when
 * the process dies, kill -9 included). Replay at start reads .prev then the current file and skips
 * every id the database already took (relay_journal_applied): records are exactly-once however
 * often the files are read.
 *
 * A record: u32 payload length | u32 CRC-32 of the payload | payload, where the payload is
 * format 1 | id u48 | to 16 | from 16 | type u8 | size u48 | created ms u48 | flags u8 |
 * file name length u16 | file name | body. A record cut short by a crash, or anything after a
 * record whose length or CRC does not hold, is ignored: never parsed as a message.
 */
export interface JournalRecord extends StoredMessage {
  createdMs: number
}

const FORMAT = 1
const PREFIX = 8
/** payload bytes before the file name */
const HEAD = 55
const HAS_BODY = 1
const HAS_FILE = 2
/** a length above this is not a record (bodies the relay receives inline are at most 64 KiB, names 255 bytes) */
const MAX_PAYLOAD = 1 << 20
/** writev with more parts than this is joined first (IOV_MAX is 1024) */
const MAX_PARTS = 1000

/** writeUIntLE(v, at, 6) without its generic path (three per record) */
function u48(b: Buffer, at: number, v: number): void {
  b.writeUInt32LE(v % 0x1_0000_0000, at)
  b.writeUInt16LE(Math.floor(v / 0x1_0000_0000), at + 4)
}

/** bodies up to this size are copied into their record's buffer: one buffer, one CRC call, a plain write */
const JOIN_MAX = 4096

/**
 * Whether a message fits in a record that reads back: decodeRecords() takes a longer length for
 * damage, so such a record would end the journal (and hide every record after it) at the next read.
 */
export function fitsRecord(body: Buffer | null, file: string | null): boolean {
  return HEAD + (file === null ? 0 : Buffer.byteLength(file, 'utf8')) + (body?.length ?? 0) <= MAX_PAYLOAD
}

/**
 * A record as buffers to write: one holding it all, or for a big body its head (prefix, payload up to
 * the body) and the body itself. The CRC covers the payload, head and body.
 */
export function encodeRecord(r: JournalRecord): Buffer[] {
  if (r.to.length !== 16 || r.from.length !== 16) throw new Error('a journal record needs 16-byte client ids')
  const name = r.file === null ? undefined : Buffer.from(r.file, 'utf8')
  const nameLen = name?.length ?? 0
  const bodyLen = r.body?.length ?? 0
  if (HEAD + nameLen + bodyLen > MAX_PAYLOAD) throw new Error(`a journal record holds at most ${MAX_PAYLOAD - HEAD} bytes of body and file name`)
  const joined = bodyLen <= JOIN_MAX
  const headLen = PREFIX + HEAD + nameLen
  const h = Buffer.allocUnsafe(joined ? headLen + bodyLen : headLen)
  h.writeUInt32LE(HEAD + nameLen + bodyLen, 0)
  h[8] = FORMAT
  u48(h, 9, r.id)
  r.to.copy(h, 15)
  r.from.copy(h, 31)
  h[47] = r.type
  u48(h, 48, r.size)
  u48(h, 54, r.createdMs)
  h[60] = (r.body === null ? 0 : HAS_BODY) | (name === undefined ? 0 : HAS_FILE)
  h.writeUInt16LE(nameLen, 61)
  if (name) name.copy(h, 63)
  if (joined) {
    if (bodyLen > 0) r.body!.copy(h, headLen)
    h.writeUInt32LE(crc32(h.subarray(PREFIX)), 4)
    return [h]
  }
  h.writeUInt32LE(crc32(r.body!, crc32(h.subarray(PREFIX))), 4)
  return [h, r.body!]
}

/**
 * The whole records of `b`, in order, up to the first one that is cut short or does not check; `end`
 * is where they stop. Ids and bodies are views into `b`.
 */
export function decodeRecords(b: Buffer): {records: JournalRecord[]; end: number} {
  const records: JournalRecord[] = []
  let at = 0
  while (at + PREFIX <= b.length) {
    const len = b.readUInt32LE(at)
    if (len < HEAD || len > MAX_PAYLOAD || at + PREFIX + len > b.length) break
    const p = b.subarray(at + PREFIX, at + PREFIX + len)
    if (crc32(p) !== b.readUInt32LE(at + 4) || p[0] !== FORMAT) break
    const flags = p[52]
    const nameLen = p.readUInt16LE(53)
    if (HEAD + nameLen > len) break
    const file = flags & HAS_FILE ? p.toString('utf8', HEAD, HEAD + nameLen) : null
    records.push({
      body: flags & HAS_BODY ? p.subarray(HEAD + nameLen) : null,
      createdMs: p.readUIntLE(46, 6),
      file,
      from: p.subarray(23, 39),
      id: p.readUIntLE(1, 6),
      size: p.readUIntLE(40, 6),
      to: p.subarray(7, 23),
      type: p[39],
    })
    at += PREFIX + len
  }
  return {end: at, records}
}

/** bytes at the end of a journal file that are not whole records */
export interface JournalTorn {
  file: string
  offset: number
  bytes: number
  /** set when they are not a record cut short by a crash (damage): where a copy of the file was kept */
  keptAt?: string
}

/** `b` from `at` is the start of one record cut short (what a crash mid-write leaves), not damage */
function cutShort(b: Buffer, at: number): boolean {
  if (b.length - at < PREFIX) return true
  const len = b.readUInt32LE(at)
  return len >= HEAD && len <= MAX_PAYLOAD && at + PREFIX + len > b.length
}

/** Takes the lock file's exclusive lock for the connection's life; SQLITE_BUSY when another holds it. */
function lockExclusive(lock: Database.Database): void {
  lock.pragma('locking_mode = EXCLUSIVE')
  lock.exec('BEGIN EXCLUSIVE')
}

export class Journal {
  /** bytes in the current file */
  private size = 0
  /** bytes of the current file whose records are in the database (see unflushed()) */
  private flushedAt = 0
  /** bytes of the current file written since the last fdatasync started */
  private unsynced = 0
  private syncing: Promise<void> | undefined
  private closed = false
  /** set when a failed write could not be undone: appends are refused from then on */
  private broken?: Error

  private constructor(
    readonly base: string,
    private readonly lock: Database.Database,
    private fd: number,
  ) {
    this.size = fstatSync(fd).size
    this.flushedAt = this.size
  }

  /**
   * Takes the journal's lock (refused at once when another relay process, or another store in this
   * one, holds it) and opens its current file for appending.
   */
  static open(base: string): Journal {
    const lock = new Database(`${base}.lock`, {timeout: 0})
    try {
      chmodSync(`${base}.lock`, 0o600)
      lockExclusive(lock)
    } catch (error) {
      lock.close()
      if ((error as {code?: string}).code !== 'SQLITE_BUSY') throw error
      throw new TempFailError('E_RELAY_JOURNAL_LOCKED', `Another relay holds ${base}.lock: one relay per store.`, {
        hint: 'Try this: stop the other `mq relay start` on this home (or give this one its own --home or store.url).',
      })
    }
    try {
      return new Journal(base, lock, openSync(base, 'a+', 0o600))
    } catch (error) {
      lock.close()
      throw error
    }
  }

  /** True when a relay process holds `<base>.lock` now (false when the file is absent: nothing created). */
  static held(base: string): boolean {
    if (!existsSync(`${base}.lock`)) return false
    const lock = new Database(`${base}.lock`, {fileMustExist: true, timeout: 0})
    try {
      lockExclusive(lock)
      return false
    } catch (error) {
      if ((error as {code?: string}).code === 'SQLITE_BUSY') return true
      throw error
    } finally {
      lock.close()
    }
  }

  /**
   * Every whole record of .prev and the current file, in order (at start: the caller puts into the
   * database those it lacks). A torn tail of the current file is cut off: appending after it would
   * bury the records that follow. Unreadable bytes that are not a last record cut short (a record
   * whole by its length whose CRC fails, a length no record has: damage on disk, not a crash, and
   * whole records may follow) are kept: the file is first copied to `<file>.damaged-at-<offset>`
   * (0600), which nothing reads, for the operator. Nothing after them is parsed: a length that is
   * itself damaged would point into a body, which a client chose.
   */
  read(): {records: JournalRecord[]; torn: JournalTorn[]} {
    const records: JournalRecord[] = []
    const torn: JournalTorn[] = []
    for (const file of [`${this.base}.prev`, this.base]) {
      if (!existsSync(file)) continue
      const b = readFileSync(file)
      const r = decodeRecords(b)
      records.push(...r.records)
      if (r.end < b.length) {
        const t: JournalTorn = {bytes: b.length - r.end, file, offset: r.end}
        if (!cutShort(b, r.end)) {
          t.keptAt = `${file}.damaged-at-${r.end}`
          if (!existsSync(t.keptAt)) writeFileSync(t.keptAt, b, {flag: 'wx', mode: 0o600})
        }
        torn.push(t)
        if (file === this.base) {
          ftruncateSync(this.fd, r.end)
          this.size = this.flushedAt = r.end
          this.unsynced = 1
        }
      }
    }
    return {records, torn}
  }

  /**
   * Appends records in one write (several only for very many). On a failure the file is cut back to
   * its last whole record and the error thrown: nothing of the batch counts as written.
   */
  append(records: readonly JournalRecord[]): void {
    const parts: Buffer[] = []
    let bytes = 0
    for (const r of records) {
      for (const b of encodeRecord(r)) {
        parts.push(b)
        bytes += b.length
      }
    }
    if (this.broken) throw this.broken
    const before = this.size
    try {
      let buf = parts.length > MAX_PARTS ? [Buffer.concat(parts, bytes)] : parts
      let left = bytes
      while (left > 0) {
        const n = buf.length === 1 ? writeSync(this.fd, buf[0]) : writevSync(this.fd, buf)
        left -= n
        if (left > 0) buf = [Buffer.concat(buf, n + left).subarray(n)]
      }
    } catch (error) {
      try {
        ftruncateSync(this.fd, before)
      } catch (cut) {
        // bytes of no whole record stay at the end: nothing may be appended (and acknowledged) behind
        // them; the next open cuts them off. Flushes still read the records before them.
        this.broken = new Error(`journal ${this.base} could not be cut back after a failed write: ${(cut as Error).message}`)
      }
      throw error
    }
    this.size += bytes
    this.unsynced += bytes
  }

  /** bytes appended since the last markFlushed() */
  get pending(): number {
    return this.size - this.flushedAt
  }

  /**
   * The records appended since the last markFlushed(), at most `maxBytes` of them (whole records;
   * at least one), read back from the file (in the page cache): the relay holds no acknowledged
   * message in memory until it reaches the database. `end` goes to markFlushed() once they are
   * committed there.
   */
  unflushed(maxBytes = Number.POSITIVE_INFINITY): {records: JournalRecord[]; end: number} {
    const pending = this.size - this.flushedAt
    if (pending === 0) return {end: this.size, records: []}
    for (let n = Math.min(pending, maxBytes); ; n = Math.min(pending, n * 2)) {
      const b = Buffer.allocUnsafe(n)
      for (let got = 0; got < n; ) {
        const r = readSync(this.fd, b, got, n - got, this.flushedAt + got)
        if (r === 0) throw new Error(`journal ${this.base} is shorter than written`)
        got += r
      }
      const {end, records} = decodeRecords(b)
      if (n < pending && end === 0) continue // the window ends inside its first record: a bigger one
      // only whole records are ever left in the file (append() cuts a failed write back)
      if (end === 0 || (n === pending && end !== n)) throw new Error(`journal ${this.base} does not read back at offset ${this.flushedAt + end}`)
      return {end: this.flushedAt + end, records}
    }
  }

  /** The records up to `end` (from unflushed()) are committed to the database. */
  markFlushed(end: number): void {
    if (end > this.flushedAt) this.flushedAt = end
  }

  /** fdatasync of what was appended so far, on the thread pool; one at a time. */
  sync(): Promise<void> {
    if (this.syncing) return this.syncing
    if (this.unsynced === 0 || this.closed) return Promise.resolve()
    this.unsynced = 0
    const fd = this.fd
    this.syncing = new Promise<void>((resolve) => {
      fdatasync(fd, () => {
        // a failed sync leaves the data in the page cache: the database commit follows anyway
        this.syncing = undefined
        resolve()
      })
    })
    return this.syncing
  }

  get bytes(): number {
    return this.size
  }

  /**
   * The current file becomes .prev (the old .prev, whose records reached the database at least one
   * rotation ago, goes) and a new one is started. False (nothing done) while a sync of the current
   * file runs or some of its records are not in the database yet.
   */
  rotate(): boolean {
    if (this.syncing || this.closed || this.flushedAt !== this.size) return false
    // renamed under the open descriptor, then replaced: a failure at either step leaves appends going
    // to a file that replay reads (the old one, under either name)
    renameSync(this.base, `${this.base}.prev`)
    const fd = openSync(this.base, 'a+', 0o600)
    closeSync(this.fd)
    this.fd = fd
    this.size = this.flushedAt = 0
    this.unsynced = 0
    return true
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.syncing
    closeSync(this.fd)
    this.lock.close()
  }
}
