/**
 * Durable state of the broker in SQLite (WAL, synchronous=FULL) under $MQ_HOME/data/broker.db:
 * exchange/queue/binding definitions, messages of durable queues and the key directory.
 * Writes are queued and committed in groups by a writer thread (store-worker.ts): while one group
 * commits (one transaction, one fsync) the next one gathers, so under load each fsync covers many
 * publishes and acks, and disk latency never blocks the event loop. Publishers are confirmed only
 * after their group has committed. better-sqlite3 is used directly: this is the hot path.
 *
 * At rest, message bodies and headers are sealed with AES-256-GCM under $MQ_HOME/secrets/broker.key
 * (see sealRecord/openRecord): the writer thread encrypts as it builds rows, so plaintext never
 * reaches broker.db or its WAL, and recovery decrypts on load.
 */
import Database from 'better-sqlite3'
import {createCipheriv, createDecipheriv, createHash, randomBytes, randomFillSync} from 'node:crypto'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import {Worker} from 'node:worker_threads'

import {ConfigError, DataError, UnavailableError} from '../errors.js'
import {type NativeCrypto, type NativeHandle, nativeCrypto} from '../util/native-crypto.js'
import type {Logger} from '../log.js'
import {Checkpointer} from '../store/checkpointer.js'
import {assertPrivateFile, ensurePrivateDir, writeSecretFile} from '../util/fs.js'
import type {ExchangeType} from '../wire/types.js'
import {recoverSegments, SEGMENT_SCHEMA, SegmentReader, segmentDir} from './body-segments.js'
import {DedupeBlocks, type DedupeLog} from './dedupe.js'
import type {Message} from './message.js'

// ---- encryption at rest -------------------------------------------------------------------------

/** File name of the store key under $MQ_HOME/secrets. */
export const STORE_KEY_FILE = 'broker.key'
const KEY_BYTES = 32
export const NONCE_BYTES = 12
export const TAG_BYTES = 16

/**
 * The key id stored with each row (messages.key_id): a 32-bit fingerprint of the key, so a row sealed
 * under another key is recognised as such (and, once rotation exists, finds its key) instead of
 * failing as "tampered". NULL marks a legacy row written before encryption at rest (plaintext).
 */
export function storeKeyId(key: Uint8Array): number {
  return createHash('sha256').update('mq broker store key id\0').update(key).digest().readUInt32BE(0)
}

/**
 * Loads $MQ_HOME/secrets/broker.key, creating it (32 random bytes, 0600 in a 0700 directory) when it
 * does not exist and `create` allows it. A key file others can read is refused (E_KEY_PERMISSIONS).
 */
export function loadStoreKey(file: string, create: boolean): Buffer {
  if (existsSync(file)) {
    assertPrivateFile(file)
    const key = readFileSync(file)
    if (key.length !== KEY_BYTES) {
      throw new DataError('E_STORE_KEY', `${file} is not a store key: ${key.length} bytes, expected ${KEY_BYTES}`, {
        hint: 'Try this: restore the broker.key that belongs to this broker.db from backup',
      })
    }
    return key
  }
  if (!create) {
    throw new ConfigError('E_STORE_KEY_MISSING', `${file} is missing, but broker.db holds messages encrypted under it`, {
      hint: 'Try this: restore secrets/broker.key from backup (a new key cannot read those messages); to discard them, move data/broker.db away',
    })
  }
  const key = randomBytes(KEY_BYTES)
  writeSecretFile(file, key)
  return key
}

/**
 * Associated data of a sealed row: the key id and the row's immutable identity (message id, queue,
 * exchange, routing key), so a ciphertext copied into another row, queue or message fails to open.
 */
export function rowAad(keyId: number, messageId: string, queue: string, exchange: string, routingKey: string): Buffer {
  const parts = [messageId, queue, exchange, routingKey]
  let n = 8 + 4
  for (const x of parts) n += 4 + Buffer.byteLength(x)
  const b = Buffer.allocUnsafe(n)
  b.write('mqstore1', 0, 'latin1')
  b.writeUInt32LE(keyId, 8)
  let p = 12
  for (const x of parts) {
    const len = b.write(x, p + 4, 'utf8')
    b.writeUInt32LE(len, p)
    p += 4 + len
  }
  return b
}

/** random nonces drawn in bulk: one getrandom call per 512 rows instead of one per row */
const noncePool = Buffer.allocUnsafe(NONCE_BYTES * 512)
let noncePos = noncePool.length

/** a fresh random 96-bit nonce from the pool, written to out[off..] (copied: the pool is refilled in place) */
function nextNonceInto(out: Uint8Array, off: number): void {
  if (noncePos === noncePool.length) {
    randomFillSync(noncePool)
    noncePos = 0
  }
  out.set(noncePool.subarray(noncePos, noncePos + NONCE_BYTES), off)
  noncePos += NONCE_BYTES
}

/**
 * Seals a row's headers and body: nonce(12) | AES-256-GCM(u32 headers length, headers JSON, body) | tag(16).
 * Headers live inside the ciphertext too; the headers column stays NULL for sealed rows.
 */
export function sealRecord(key: Uint8Array, aad: Uint8Array, headers: Uint8Array, body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(NONCE_BYTES + 4 + headers.length + body.length + TAG_BYTES)
  nextNonceInto(out, 0)
  const c = createCipheriv('aes-256-gcm', key, out.subarray(0, NONCE_BYTES), {authTagLength: TAG_BYTES})
  c.setAAD(aad)
  const len = Buffer.allocUnsafe(4)
  len.writeUInt32LE(headers.length)
  // GCM is a stream mode: update() returns exactly as many bytes as it is given
  let p = NONCE_BYTES
  for (const part of [len, headers, body]) {
    if (part.length === 0) continue
    p += c.update(part).copy(out, p)
  }
  p += c.final().copy(out, p)
  c.getAuthTag().copy(out, p)
  return out
}

/**
 * A row sealed split: the same AES-256-GCM stream as sealRecord (one random nonce, the same associated
 * data and plaintext u32 headers length | headers | body), but the body's ciphertext is the body column
 * exactly as the cipher returns it, and nonce(12) | ciphertext of (headers length, headers) | tag(16)
 * go in the headers column, as a BLOB. Laying the nonce and the tag around the body cost a copy of
 * every big body into fresh memory, on the writer thread. Rows sealed whole (headers NULL) read as before.
 */
export function sealSplit(key: Uint8Array, aad: Uint8Array, headers: Uint8Array, body: Uint8Array): {head: Buffer; body: Buffer} {
  const head = Buffer.allocUnsafe(NONCE_BYTES + 4 + headers.length + TAG_BYTES)
  nextNonceInto(head, 0)
  const c = createCipheriv('aes-256-gcm', key, head.subarray(0, NONCE_BYTES), {authTagLength: TAG_BYTES})
  c.setAAD(aad)
  const len = Buffer.allocUnsafe(4)
  len.writeUInt32LE(headers.length)
  let p = NONCE_BYTES
  p += c.update(len).copy(head, p)
  if (headers.length > 0) p += c.update(headers).copy(head, p)
  const sealed = c.update(body)
  c.final()
  c.getAuthTag().copy(head, p)
  return {body: sealed, head}
}

/** Opens a row sealed split (see sealSplit); throws if either part was altered or moved, or the key differs. */
export function openSplit(key: Uint8Array, aad: Uint8Array, head: Buffer, sealed: Buffer): {headers: string; body: Buffer} {
  if (head.length < NONCE_BYTES + 4 + TAG_BYTES) throw new Error(`sealed row head too short (${head.length} bytes)`)
  const d = createDecipheriv('aes-256-gcm', key, head.subarray(0, NONCE_BYTES), {authTagLength: TAG_BYTES})
  d.setAAD(aad)
  d.setAuthTag(head.subarray(head.length - TAG_BYTES))
  const h = d.update(head.subarray(NONCE_BYTES, head.length - TAG_BYTES))
  const body = d.update(sealed)
  d.final()
  if (4 + h.readUInt32LE(0) !== h.length) throw new Error('sealed row has a bad headers length')
  return {body, headers: h.toString('utf8', 4)}
}

/** Opens a sealed row; throws if it was altered, moved to another row, or sealed under another key. */
export function openRecord(key: Uint8Array, aad: Uint8Array, sealed: Buffer): {headers: string; body: Buffer} {
  if (sealed.length < NONCE_BYTES + 4 + TAG_BYTES) throw new Error(`sealed row too short (${sealed.length} bytes)`)
  const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, NONCE_BYTES), {authTagLength: TAG_BYTES})
  d.setAAD(aad)
  d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES))
  // GCM's final() only checks the tag (it returns no bytes): no concatenation copy of the row
  const plain = d.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES))
  d.final()
  const hl = plain.readUInt32LE(0)
  if (4 + hl > plain.length) throw new Error('sealed row has a bad headers length')
  return {body: plain.subarray(4 + hl), headers: plain.toString('utf8', 4, 4 + hl)}
}

/**
 * Sealed groups. Sealing each row on its own cost ~6 us per message (a cipher context per row): the
 * largest item of the writer thread at 50k durable msg/s. The writer instead seals the small messages
 * one commit inserts as one group: nonce(12) | AES-256-GCM(records) | tag(16), where the records are
 * the packed insert records of packMessages (seq, queue, message id, exchange, routing key, headers,
 * ts, delivery count, expiry, body). The associated data binds the key id and the group id, and
 * recovery checks each row's columns against its sealed record, so rows and groups cannot be swapped.
 * Bodies of GROUP_BODY_MAX bytes or more are sealed per row as before, so a group stays small, and
 * their ciphertext goes to a body segment file, not to broker.db (see body-segments.ts).
 */
export const GROUP_BODY_MAX = 64 * 1024
/**
 * Plaintext bytes after which the writer closes a group and starts the next. Each group's plaintext,
 * ciphertext and SQLite's copies of it were fresh allocations: at 1 MiB every one was mapped and
 * page-faulted in anew (a third of the writer at 1 KiB messages); at 64 KiB they stay in malloc's arena.
 */
export const GROUP_BYTES_MAX = 64 * 1024
/**
 * A sealed group of this many bytes or more goes to a body segment (body-segments.ts), not into
 * broker.db: written once, instead of to the WAL, again by the checkpoint, and read back to walk its
 * overflow chain when it goes (writer CPU per 1 KiB message -25%). Smaller ones (the last group of a
 * commit of a few messages) stay in broker.db: a segment costs the commit a second fdatasync.
 */
export const GROUP_SEGMENT_MIN = 32 * 1024
/**
 * A commit whose packed message records come to less than this keeps all its groups in broker.db, even
 * those of GROUP_SEGMENT_MIN or more: a segment costs the commit a second sync (the segment's
 * fdatasync, then the WAL's fsync), which for a small commit outweighs writing its groups to the WAL
 * and again at the checkpoint. Measured with every group in broker.db (4 KiB pages, store-cpu.mjs,
 * window 500, 3 pairs): 256 B messages (commits of ~110 KiB) writer 3.5-4.0 -> 3.3-3.4 us/msg and
 * msg/s 49-79k -> 88-210k; 1 KiB (~350 KiB) 5.0-5.3 -> 4.6-4.8 us; 16 KiB (~5 MiB) 22 -> 46-48 us, so
 * big commits keep their groups in segments. 256 KiB: below the point where that was measured to pay.
 */
export const GROUP_SEGMENT_COMMIT_MIN = 256 * 1024

function groupAad(keyId: number, groupId: number): Buffer {
  const b = Buffer.allocUnsafe(8 + 4 + 8)
  b.write('mqgroup1', 0, 'latin1')
  b.writeUInt32LE(keyId, 8)
  b.writeDoubleLE(groupId, 12)
  return b
}

export function sealGroup(key: Uint8Array, keyId: number, groupId: number, plain: Buffer): Buffer {
  const nonce = Buffer.allocUnsafe(NONCE_BYTES)
  nextNonceInto(nonce, 0)
  const c = createCipheriv('aes-256-gcm', key, nonce, {authTagLength: TAG_BYTES})
  c.setAAD(groupAad(keyId, groupId))
  const body = c.update(plain)
  c.final()
  return Buffer.concat([nonce, body, c.getAuthTag()])
}

export function openGroup(key: Uint8Array, keyId: number, groupId: number, sealed: Buffer): Buffer {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new Error(`sealed group too short (${sealed.length} bytes)`)
  const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, NONCE_BYTES), {authTagLength: TAG_BYTES})
  d.setAAD(groupAad(keyId, groupId))
  d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES))
  const plain = d.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES))
  d.final()
  return plain
}

/**
 * Reused buffers of StoreSealer and StoreOpener grow up to this size (a 1 MiB body and its headers
 * fit); a bigger one gets fresh memory for that call, so one huge message does not pin its size.
 */
const SCRATCH_MAX = 4 * 1024 * 1024

class Scratch {
  private buf = Buffer.alloc(0)
  /** a buffer of at least n bytes: the kept one, grown, or (past SCRATCH_MAX) a fresh one not kept */
  get(n: number): Buffer {
    if (this.buf.length >= n) return this.buf
    if (n > SCRATCH_MAX) return Buffer.allocUnsafe(n)
    this.buf = Buffer.allocUnsafeSlow(Math.min(SCRATCH_MAX, Math.max(n, 2 * this.buf.length, 64 * 1024)))
    return this.buf
  }
}

/**
 * The writer thread's sealing at rest: sealSplit and sealGroup with the store key set up once in the
 * native addon (util/native-crypto.ts) and the ciphertext written into buffers reused from call to call.
 * node:crypto cannot encrypt into an existing buffer: each cipher.update of a 1 MiB body allocated,
 * zero-filled and page-faulted in a fresh 1 MiB (about 40% of the writer at 1 MiB bodies). The bytes
 * are the same (same nonce pool, AAD, layout); without the addon the functions above do the work.
 * What split() and group() return views of a reused buffer: valid until the next call, so the caller
 * writes it out (segment pwrite, or an SQLite bind, which copies) before it seals again.
 */
export class StoreSealer {
  private readonly n: NativeCrypto | undefined
  private readonly h: NativeHandle | undefined
  private readonly out = new Scratch()

  constructor(
    private readonly key: Uint8Array,
    private readonly keyId: number,
  ) {
    this.n = nativeCrypto()
    this.h = this.n?.gcmKey(key, false)
  }

  /** whether the addon does the work (else node:crypto, as sealSplit and sealGroup) */
  get native(): boolean {
    return this.h !== undefined
  }

  /** sealSplit's bytes; `body` is a view of a reused buffer (see the class) */
  split(aad: Uint8Array, headers: Uint8Array, body: Uint8Array): {head: Buffer; body: Buffer} {
    if (!this.n) return sealSplit(this.key, aad, headers, body)
    // one GCM stream over u32 headers length | headers | body, sealed into a reused buffer
    const hl = 4 + headers.length
    const n = hl + body.length
    const out = this.out.get(n + TAG_BYTES)
    const head = Buffer.allocUnsafe(NONCE_BYTES + hl + TAG_BYTES)
    nextNonceInto(head, 0)
    // the short plaintext head is laid out in the row's head buffer (its ciphertext overwrites it
    // below), and the body is sealed where it is (shared memory): a pass over every big body less
    // than laying the three out in one plaintext first
    const plainHead = head.subarray(NONCE_BYTES, NONCE_BYTES + hl)
    plainHead.writeUInt32LE(headers.length, 0)
    plainHead.set(headers, 4)
    this.n.gcmSeal2(this.h!, head.subarray(0, NONCE_BYTES), aad, plainHead, body, out, 0)
    out.copy(head, NONCE_BYTES, 0, hl)
    out.copy(head, NONCE_BYTES + hl, n, n + TAG_BYTES)
    return {body: out.subarray(hl, n), head}
  }

  /** sealGroup's bytes (nonce | ciphertext | tag), a view of a reused buffer (see the class) */
  group(groupId: number, plain: Buffer): Buffer {
    if (!this.n) return sealGroup(this.key, this.keyId, groupId, plain)
    const size = NONCE_BYTES + plain.length + TAG_BYTES
    const out = this.out.get(size)
    nextNonceInto(out, 0)
    this.n.gcmSeal(this.h!, out.subarray(0, NONCE_BYTES), groupAad(this.keyId, groupId), plain, out, NONCE_BYTES)
    return out.subarray(0, size)
  }

  /** frees the native context (its key cleansed); the GC would do it too */
  dispose(): void {
    if (this.h) this.n!.gcmDispose(this.h)
  }
}

/**
 * The reading side of StoreSealer (readQueue, on the broker's event loop): openSplit, openRecord and
 * openGroup with the key set up once, plaintext written by the addon into the buffer the reader needs
 * anyway (the delivered body), or for a group into a reused buffer its records are copied out of.
 * Stores written by either path read by either. Throws as the functions above do.
 */
export class StoreOpener {
  private readonly n: NativeCrypto | undefined
  private readonly h: NativeHandle | undefined
  private readonly ct = new Scratch()
  private readonly plain = new Scratch()

  constructor(
    private readonly key: Uint8Array,
    private readonly keyId: number,
  ) {
    this.n = nativeCrypto()
    this.h = this.n?.gcmKey(key, true)
  }

  get native(): boolean {
    return this.h !== undefined
  }

  /** openSplit; the body is a view of a fresh buffer (from the headers length on) */
  split(aad: Uint8Array, head: Buffer, sealed: Buffer): {headers: string; body: Buffer} {
    if (!this.n) return openSplit(this.key, aad, head, sealed)
    const ct = this.splitCiphertext(head, sealed.length)
    sealed.copy(ct, ct.length - sealed.length)
    return this.openSplitCiphertext(aad, head, ct)
  }

  /**
   * With the addon: the GCM stream of a row sealed split is (headers length, headers) then the body,
   * one contiguous ciphertext for it. This returns that buffer (a reused one, `bodyLength` bytes longer
   * than the head's part, which is already in place): the caller puts the body's ciphertext at its end,
   * a segment's bytes read straight there (readInto) instead of into a fresh buffer of their own and
   * then copied, and openSplitCiphertext opens it. Only with the addon (`native`); the head must be at
   * least NONCE_BYTES + 4 + TAG_BYTES long (split() checks).
   */
  splitCiphertext(head: Buffer, bodyLength: number): Buffer {
    if (head.length < NONCE_BYTES + 4 + TAG_BYTES) throw new Error(`sealed row head too short (${head.length} bytes)`)
    const hl = head.length - NONCE_BYTES - TAG_BYTES
    const ct = this.ct.get(hl + bodyLength).subarray(0, hl + bodyLength)
    head.copy(ct, 0, NONCE_BYTES, NONCE_BYTES + hl)
    return ct
  }

  /** opens what splitCiphertext returned, its body filled in; the plaintext is a fresh buffer (the delivered body) */
  openSplitCiphertext(aad: Uint8Array, head: Buffer, ct: Buffer): {headers: string; body: Buffer} {
    const hl = head.length - NONCE_BYTES - TAG_BYTES
    const plain = Buffer.allocUnsafe(ct.length)
    if (!this.n!.gcmOpen(this.h!, head.subarray(0, NONCE_BYTES), aad, ct, head.subarray(head.length - TAG_BYTES), plain)) throw new Error('Unsupported state or unable to authenticate data')
    if (4 + plain.readUInt32LE(0) !== hl) throw new Error('sealed row has a bad headers length')
    return {body: plain.subarray(hl), headers: plain.toString('utf8', 4, hl)}
  }

  /** openRecord; the body is a view of a fresh buffer */
  record(aad: Uint8Array, sealed: Buffer): {headers: string; body: Buffer} {
    if (!this.n) return openRecord(this.key, aad, sealed)
    if (sealed.length < NONCE_BYTES + 4 + TAG_BYTES) throw new Error(`sealed row too short (${sealed.length} bytes)`)
    const plain = Buffer.allocUnsafe(sealed.length - NONCE_BYTES - TAG_BYTES)
    if (!this.n.gcmOpen(this.h!, sealed.subarray(0, NONCE_BYTES), aad, sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES), sealed.subarray(sealed.length - TAG_BYTES), plain)) throw new Error('Unsupported state or unable to authenticate data')
    const hl = plain.readUInt32LE(0)
    if (4 + hl > plain.length) throw new Error('sealed row has a bad headers length')
    return {body: plain.subarray(4 + hl), headers: plain.toString('utf8', 4, 4 + hl)}
  }

  /** openGroup; the records are in a reused buffer (valid until the next call): copy out what is kept */
  group(groupId: number, sealed: Buffer): Buffer {
    if (!this.n) return openGroup(this.key, this.keyId, groupId, sealed)
    if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new Error(`sealed group too short (${sealed.length} bytes)`)
    const n = sealed.length - NONCE_BYTES - TAG_BYTES
    const out = this.plain.get(n).subarray(0, n)
    if (!this.n.gcmOpen(this.h!, sealed.subarray(0, NONCE_BYTES), groupAad(this.keyId, groupId), sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES), sealed.subarray(sealed.length - TAG_BYTES), out)) throw new Error('Unsupported state or unable to authenticate data')
    return out
  }

  dispose(): void {
    if (this.h) this.n!.gcmDispose(this.h)
  }
}

/** Reads the packed insert record at p (kind byte included); returns the message and where the next record starts. */
export function readInsertRecord(buf: Buffer, p: number, shared?: Uint8Array[]): {m: StoredMessage; headers: string; next: number} {
  const kind = buf[p]
  // a shared insert only ever comes from the broker's own packed runs, never from a sealed group
  if (kind !== REC_INSERT && !(kind === REC_INSERT_SHARED && shared)) throw new Error(`not an insert record (kind ${buf[p]})`)
  const seq = buf.readDoubleLE(p + 1)
  p += 9
  const str = () => {
    const n = buf.readUInt32LE(p)
    const v = buf.toString('utf8', p + 4, p + 4 + n)
    p += 4 + n
    return v
  }
  const queue = str()
  const messageId = str()
  const exchange = str()
  const routingKey = str()
  const headers = str()
  const timestamp = buf.readDoubleLE(p)
  const deliveryCount = buf.readUInt32LE(p + 8)
  const expiresAt = buf.readDoubleLE(p + 12)
  const len = buf.readUInt32LE(p + 20)
  p += 24
  if (kind === REC_INSERT_SHARED) {
    const view = shared![buf.readUInt32LE(p)]
    if (!view || view.byteLength !== len || len < GROUP_BODY_MAX) throw new Error('corrupt shared insert record')
    const body = Buffer.from(view.buffer, view.byteOffset, view.byteLength)
    return {headers, m: {body, deliveryCount, exchange, expiresAt, headers: {}, messageId, queue, routingKey, seq, timestamp}, next: p + 4}
  }
  if (p + len > buf.length) throw new Error('truncated insert record')
  const body = buf.subarray(p, p + len)
  return {headers, m: {body, deliveryCount, exchange, expiresAt, headers: {}, messageId, queue, routingKey, seq, timestamp}, next: p + len}
}

/** A stored message that recovery could not decrypt: skipped (not delivered), left in broker.db. */
export interface UnreadableMessage {
  seq: number
  messageId: string
  queue: string
  reason: string
}

export interface StoreOptions {
  /** the store key, normally join(home.secrets, STORE_KEY_FILE); created on first start */
  keyFile: string
  synchronous?: 'FULL' | 'NORMAL'
  /** where recovery reports undecryptable and legacy plaintext rows */
  logger?: Logger
}

export interface StoredMessage {
  queue: string
  seq: number
  messageId: string
  exchange: string
  routingKey: string
  headers: Record<string, string>
  body: Buffer
  timestamp: number
  deliveryCount: number
  expiresAt: number
}

/**
 * Page size of a new broker.db (an existing one keeps its own: SQLite reads any). 16 KiB pages were
 * chosen (s25) while big bodies lived in overflow chains in broker.db; they are in body segments now
 * (bodies of GROUP_BODY_MAX or more, groups of GROUP_SEGMENT_MIN or more), and broker.db only holds
 * rows and groups under 32 KiB. What each commit writes to the WAL (and the checkpoint writes again)
 * is then whole pages of which a few rows changed: the leaves of the inserted and of the deleted
 * rows, sealed_groups, queue_stats, body_segments, the freelist. With 4 KiB pages the writer thread
 * measured 4.1-4.7 against 5.0-5.4 us per durable 256 B message (4 interleaved pairs), 1 KiB
 * 5.8-5.9 against 6.2-6.3; 16 KiB and 1 MiB bodies the same.
 */
export const STORE_PAGE_BYTES = 4 * 1024

/** SQLite page cache per connection (negative: KiB) */
export const STORE_CACHE_KIB = -2048

/** a messages row as readQueue selects it */
interface StoredRow {
  seq: number
  queue: string
  message_id: string
  exchange: string
  routing_key: string
  /** legacy rows: the headers JSON; rows sealed split: nonce, sealed headers and tag (see sealSplit); else NULL */
  headers: string | Buffer | null
  body: Buffer
  ts: number
  delivery_count: number
  expires_at: number
  key_id: number | null
  group_id: number | null
  size: number | null
  /** a body in a segment file (body-segments.ts): its id and offset; the body column is then empty */
  seg: number | null
  seg_off: number | null
}

/** a sealed_groups row as readQueue selects it (seg: the group is in a body segment, data is empty) */
interface GroupRow {
  key_id: number
  data: Buffer
  seg: number | null
  seg_off: number | null
  seg_len: number | null
}

export interface StoredQueue {
  name: string
  deadLetter: string | null
  ttlMs: number | null
  maxLength: number | null
}

type Op =
  | {t: 'ins'; queue: string; m: Message}
  /** size: the body's length, when the engine knows it (see REC_DELETE_BIG) */
  | {t: 'del'; seq: number; size?: number}
  | {t: 'cnt'; seq: number; n: number}
  | {t: 'wire'; op: WireOp}
  /** published ids (dedupe.ts): ops like the others, so a group cut never parts one from its message rows */
  | {t: 'pub'; seq: number; id: string; queues: string[]; at: number}
  | {t: 'fgt'; seq: number}

/** What crosses to the writer thread (store-worker.ts): compact tuples, cheap to clone. */
export type WireOp =
  | ['i', number, string, string, string, string, string | null, Uint8Array, number, number, number]
  | ['d', number]
  | ['c', number, number]
  | ['x', string, string]
  | ['q', string, string | null, number | null, number | null]
  | ['b', string, string, string]
  | ['D', string]
  /** an exchange and its bindings deleted */
  | ['X', string]
  /** one binding removed: exchange, queue, routing key */
  | ['B', string, string, string]
  | ['k', string, string, string]
  /** reseal a legacy plaintext row: seq, queue, message_id, exchange, routing_key, headers, body */
  | ['R', number, string, string, string, string, string | null, Uint8Array]
  /** published ids (dedupe.ts): a new block [first, last, ids JSON] or none, then keys of blocks to delete */
  | ['u', [number, number, string] | null, number[]]
  /** purge: a queue's rows with a seq above the given one (the part of it only on disk) */
  | ['P', string, number]

/** Record kinds in a packed message run (see packMessages / store-worker.ts). */
export const REC_INSERT = 1
export const REC_DELETE = 2
export const REC_COUNT = 3
/** an insert whose body (GROUP_BODY_MAX or more, in shared memory) is not in the record: see packMessages */
export const REC_INSERT_SHARED = 4
/**
 * a delete of a row whose body is GROUP_BODY_MAX or more (so it was sealed in its own row, never in a
 * group), with its body size: the writer then needs nothing of the row but its queue. Returning the
 * row's group and size, which SQLite stores after the body, walked the body's whole overflow chain
 * once more (a read of every page of it) for each big message acked.
 */
export const REC_DELETE_BIG = 5

/**
 * A body the writer thread can read where it is: in shared memory (the frame parser puts bodies of
 * SHARED_BODY bytes or more there) and sealed per row (GROUP_BODY_MAX or more), so it is never part of
 * a group's plaintext record. Copying such bodies into the packed run cost a pass over every big body
 * (and fresh memory the size of the run, page-faulted in for each commit).
 */
function sharedBody(body: Buffer): boolean {
  return body.length >= GROUP_BODY_MAX && body.buffer instanceof SharedArrayBuffer
}

/** Where the packed record at p (see packMessages) ends: the next one starts there. */
export function recordEnd(buf: Buffer, p: number): number {
  const kind = buf[p]
  if (kind === REC_DELETE) return p + 9
  if (kind === REC_COUNT || kind === REC_DELETE_BIG) return p + 13
  if (kind !== REC_INSERT && kind !== REC_INSERT_SHARED) throw new Error(`corrupt batch: record kind ${kind}`)
  let q = p + 9
  // queue, message id, exchange, routing key, headers
  for (let i = 0; i < 5; i++) q += 4 + buf.readUInt32LE(q)
  return kind === REC_INSERT_SHARED ? q + 28 : q + 24 + buf.readUInt32LE(q + 20)
}

/**
 * insert: u8 kind, f64 seq, str queue, str message_id, str exchange, str routing_key, str headers
 *         ('' = none), f64 ts, u32 delivery_count, f64 expires_at, u32 body length, body
 * shared insert: the same with kind REC_INSERT_SHARED and, instead of the body, u32 index into `shared`
 * delete: u8 kind, f64 seq      count: u8 kind, f64 seq, u32 n      str = u32 byte length + UTF-8
 * Bodies in shared memory are pushed to `shared` (they cross to the writer thread without a copy).
 */
function packMessages(run: Op[], shared: Uint8Array[]): Uint8Array {
  let size = 0
  const headers: (string | undefined)[] = []
  // the messages of one PUBLISH_BATCH (every message of an mq send) share one headers object: serialised once
  let lastHeaders: Record<string, string> | undefined
  let lastJson: string | undefined
  for (const op of run) {
    if (op.t === 'ins') {
      const m = op.m
      let h: string | undefined
      if (m.headers === lastHeaders) h = lastJson
      else
        for (const _k in m.headers) {
          h = JSON.stringify(m.headers)
          lastHeaders = m.headers
          lastJson = h
          break
        }
      headers.push(h)
      size += 1 + 8 + 5 * 4 + 3 * (op.queue.length + m.messageId.length + m.exchange.length + m.routingKey.length + (h?.length ?? 0)) + 8 + 4 + 8 + 4 + (sharedBody(m.body) ? 4 : m.body.length)
    } else size += op.t === 'del' && (op.size ?? 0) < GROUP_BODY_MAX ? 9 : 13
  }
  const buf = Buffer.allocUnsafeSlow(size)
  let p = 0
  const str = (v: string) => {
    const len = v.length
    // queue names, ids and keys are short ASCII: a byte loop beats a call into the UTF-8 encoder
    // (four or five of them per message were the larger part of packing a 256 B message)
    if (len <= 64) {
      let i = 0
      for (; i < len; i++) {
        const c = v.charCodeAt(i)
        if (c > 0x7f) break
        buf[p + 4 + i] = c
      }
      if (i === len) {
        buf.writeUInt32LE(len, p)
        p += 4 + len
        return
      }
    }
    const n = buf.write(v, p + 4, 'utf8')
    buf.writeUInt32LE(n, p)
    p += 4 + n
  }
  let hi = 0
  for (const op of run) {
    if (op.t === 'ins') {
      const m = op.m
      const inPlace = sharedBody(m.body)
      buf[p++] = inPlace ? REC_INSERT_SHARED : REC_INSERT
      buf.writeDoubleLE(m.seq, p)
      p += 8
      str(op.queue)
      str(m.messageId)
      str(m.exchange)
      str(m.routingKey)
      str(headers[hi++] ?? '')
      buf.writeDoubleLE(m.timestamp, p)
      buf.writeUInt32LE(m.deliveryCount, p + 8)
      buf.writeDoubleLE(m.expiresAt, p + 12)
      buf.writeUInt32LE(m.body.length, p + 20)
      p += 24
      if (inPlace) {
        buf.writeUInt32LE(shared.length, p)
        shared.push(m.body)
        p += 4
      } else {
        m.body.copy(buf, p)
        p += m.body.length
      }
    } else if (op.t === 'del') {
      const big = (op.size ?? 0) >= GROUP_BODY_MAX
      buf[p++] = big ? REC_DELETE_BIG : REC_DELETE
      buf.writeDoubleLE(op.seq, p)
      p += 8
      if (big) {
        buf.writeUInt32LE(op.size!, p)
        p += 4
      }
    } else if (op.t === 'cnt') {
      buf[p++] = REC_COUNT
      buf.writeDoubleLE(op.seq, p)
      buf.writeUInt32LE(op.n, p + 8)
      p += 12
    }
  }
  return new Uint8Array(buf.buffer, 0, p)
}

/**
 * Group commits are pipelined: groups are posted to the writer thread as they form (it commits them
 * in order, each commit taking every group queued when it starts), and a group closes after
 * GROUP_WAITERS confirms. With one group of everything, a publisher's whole window went into one
 * commit and waited for it, then the next window arrived while the writer sat idle: the two moved in
 * lockstep. Measured with `mq bench --mode durable` (window 500): one unbounded group 35k msg/s,
 * 128 x 4 in flight 53k. Up to MAX_INFLIGHT groups are posted: a group held back here misses the
 * writer's next commit and waits for one more fsync (at 4, a slow fsync at a low rate held back the
 * publishes that arrived during it); what bounds the work in flight is each connection's unconfirmed limit.
 */
const MAX_INFLIGHT = 64
const GROUP_WAITERS = 128

/** how long writes nobody waits for may stay in memory before they are committed anyway */
const LAZY_COMMIT_MS = 50

export type CommitCallback = (err?: Error) => void

const SCHEMA = `
CREATE TABLE IF NOT EXISTS exchanges (name TEXT PRIMARY KEY, type TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, dead_letter TEXT, ttl_ms INTEGER, max_length INTEGER);
CREATE TABLE IF NOT EXISTS bindings (exchange TEXT NOT NULL, queue TEXT NOT NULL, routing_key TEXT NOT NULL, PRIMARY KEY (exchange, queue, routing_key));
CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, queue TEXT NOT NULL, message_id TEXT NOT NULL, exchange TEXT NOT NULL,
  routing_key TEXT NOT NULL, headers TEXT, body BLOB NOT NULL, ts INTEGER NOT NULL, delivery_count INTEGER NOT NULL DEFAULT 0, expires_at INTEGER NOT NULL DEFAULT 0,
  key_id INTEGER);
-- key_id: see storeKeyId; NULL = legacy plaintext row (body and headers as given)
-- no index on queue: it would double the cost of every insert and delete on the hot path, and only
-- deleting a whole queue (rare) needs it
DROP INDEX IF EXISTS messages_queue;

CREATE TABLE IF NOT EXISTS keys (name TEXT PRIMARY KEY, enc_cert TEXT NOT NULL, sign_cert TEXT NOT NULL, updated_at INTEGER NOT NULL);
-- ids of deduplicated publishes not yet settled by their publisher (dedupe.ts): one row per group commit,
-- ids = JSON [[seq, message_id, [queues], at], ...] with seqs first..last
CREATE TABLE IF NOT EXISTS published_blocks (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, ids TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
-- sealed groups: the messages one commit inserted, sealed together (see sealGroup); a row with a
-- group_id keeps its headers and body there (body column empty), and a group goes when its last row does
-- seg, seg_off, seg_len: a group of GROUP_SEGMENT_MIN bytes or more is in a body segment (data empty)
CREATE TABLE IF NOT EXISTS sealed_groups (id INTEGER PRIMARY KEY, key_id INTEGER NOT NULL, data BLOB NOT NULL, live INTEGER, seg INTEGER, seg_off INTEGER, seg_len INTEGER);
-- the per-queue index a restart reads instead of the messages (kept by the writer in each commit):
-- a restart costs a row per queue, not a row per message
CREATE TABLE IF NOT EXISTS queue_stats (queue TEXT PRIMARY KEY, messages INTEGER NOT NULL, bytes INTEGER NOT NULL);
${SEGMENT_SCHEMA}`

export class DurableStore implements DedupeLog {
  /** read connection (startup recovery, key look-ups); all writes go through the writer thread */
  readonly db: Database.Database
  readonly file: string
  private ops: Op[] = []
  /**
   * The smallest seq inserted by the ops not yet posted (Infinity: none). The engine inserts a
   * message in the same synchronous call that gives it its seq, and a group is only cut between
   * such calls, so a durable message with a seq from here on still has its insert in `ops`.
   */
  private pendingInsMin = Infinity
  /** which published-id block holds which ids, to delete a block's row once all are forgotten */
  private readonly blocks = new DedupeBlocks()
  private waiters: CommitCallback[] = []
  /** this.ops.length when each waiter arrived: a group can end right after a waiter's writes */
  private waiterMarks: number[] = []
  private timer?: NodeJS.Timeout | NodeJS.Immediate
  private lazy?: NodeJS.Timeout
  /** batches posted to the writer and not yet committed, oldest first (the writer commits in order) */
  private inflight: {id: number; waiters: CommitCallback[]; maxSeq: number}[] = []
  /**
   * Every message inserted with a seq up to this is committed (readable by readQueue). Paging reads
   * only up to it: newer rows of a queue stay in the engine's memory until their commit.
   */
  committedSeq = 0
  private batchSeq = 1
  private closed = false
  private readonly worker: Worker
  private readonly checkpointer: Checkpointer
  private failure?: Error
  private readonly key: Buffer
  readonly keyId: number
  private readonly opener: StoreOpener
  private readonly segments: SegmentReader
  private readonly logger?: Logger
  /** rows readQueue() could not decrypt since the store opened (also logged) */
  unreadable: UnreadableMessage[] = []
  /** legacy plaintext rows readQueue() found (written before encryption at rest; resealed as read) */
  legacyPlaintext = 0
  commits = 0

  constructor(
    dataDir: string,
    private readonly commitIntervalMs: number,
    opts: StoreOptions,
  ) {
    ensurePrivateDir(dataDir)
    this.file = join(dataDir, 'broker.db')
    this.logger = opts.logger
    try {
      this.db = new Database(this.file)
      // a new broker.db gets STORE_PAGE_BYTES pages (before WAL mode fixes the size; an existing file keeps its own)
      this.db.pragma(`page_size = ${STORE_PAGE_BYTES}`)
      this.db.pragma('journal_mode = WAL')
      // better-sqlite3's default page cache is 16 MB per connection: paging reads a queue's tail
      // once, in order, so a small cache costs nothing and keeps the broker's RSS off the backlog
      this.db.pragma(`cache_size = ${STORE_CACHE_KIB}`)
      this.db.exec(SCHEMA)
      // stores from before encryption at rest: add the column; their rows stay readable as legacy plaintext
      const cols = this.db.prepare('PRAGMA table_info(messages)').all() as {name: string}[]
      if (!cols.some((c) => c.name === 'key_id')) this.db.exec('ALTER TABLE messages ADD COLUMN key_id INTEGER')
      if (!cols.some((c) => c.name === 'group_id')) this.db.exec('ALTER TABLE messages ADD COLUMN group_id INTEGER')
      // size: the body's length (grouped rows keep their body in the group), for bytes on disk per queue
      if (!cols.some((c) => c.name === 'size')) this.db.exec('ALTER TABLE messages ADD COLUMN size INTEGER')
      // seg, seg_off: where a big body is (body-segments.ts); rows from before keep their body in the row
      if (!cols.some((c) => c.name === 'seg')) this.db.exec('ALTER TABLE messages ADD COLUMN seg INTEGER; ALTER TABLE messages ADD COLUMN seg_off INTEGER')
      // live rows per sealed group (the writer keeps it; before, it scanned every row at start)
      const gcols = this.db.prepare('PRAGMA table_info(sealed_groups)').all() as {name: string}[]
      // groups in body segments (GROUP_SEGMENT_MIN); groups from before keep their data in the row
      if (!gcols.some((c) => c.name === 'seg')) this.db.exec('ALTER TABLE sealed_groups ADD COLUMN seg INTEGER; ALTER TABLE sealed_groups ADD COLUMN seg_off INTEGER; ALTER TABLE sealed_groups ADD COLUMN seg_len INTEGER')
      if (!gcols.some((c) => c.name === 'live')) {
        this.db.transaction(() => {
          this.db.exec('ALTER TABLE sealed_groups ADD COLUMN live INTEGER')
          this.db.exec('CREATE TEMP TABLE group_live (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)')
          this.db.exec('INSERT INTO group_live SELECT group_id, COUNT(*) FROM messages WHERE group_id IS NOT NULL GROUP BY group_id')
          this.db.exec('UPDATE sealed_groups SET live = COALESCE((SELECT n FROM group_live WHERE group_live.id = sealed_groups.id), 0)')
          this.db.exec('DROP TABLE group_live')
        })()
      }
      // a store from before the index: built once from the rows (one scan), then kept by the writer
      if (!this.db.prepare("SELECT 1 FROM meta WHERE k = 'queue_stats'").get()) {
        this.db.transaction(() => {
          this.db.exec('DELETE FROM queue_stats')
          this.db.exec('INSERT INTO queue_stats (queue, messages, bytes) SELECT queue, COUNT(*), SUM(COALESCE(size, length(body))) FROM messages GROUP BY queue')
          this.db.exec("INSERT INTO meta (k, v) VALUES ('queue_stats', '1')")
        })()
      }
    } catch (error) {
      throw new UnavailableError('E_STORE_OPEN', `cannot open the broker store ${this.file}: ${(error as Error).message}`, {hint: 'Try this: check the permissions of $MQ_HOME/data', cause: error})
    }
    try {
      // never mint a fresh key over rows sealed under a lost one: they would all become unreadable
      const sealed = this.db.prepare('SELECT 1 FROM messages WHERE key_id IS NOT NULL LIMIT 1').get() !== undefined
      this.key = loadStoreKey(opts.keyFile, !sealed)
    } catch (error) {
      this.db.close()
      throw error
    }
    this.keyId = storeKeyId(this.key)
    this.opener = new StoreOpener(this.key, this.keyId)
    const segDir = segmentDir(dataDir)
    let segmentStart: number
    try {
      const r = recoverSegments(this.db, segDir)
      segmentStart = r.maxId + 1
      if (r.removed.length > 0 || r.truncated.length > 0) this.logger?.info('body segments recovered', {removed: r.removed.length, truncated: r.truncated.length})
      if (r.short.length > 0) {
        this.logger?.error('body segments are shorter than their committed bytes or missing: their messages will be reported unreadable', {segments: r.short, hint: 'Try this: restore data/bodies from the backup that holds this broker.db'})
      }
    } catch (error) {
      this.db.close()
      throw new UnavailableError('E_STORE_OPEN', `cannot open the body segments in ${segDir}: ${(error as Error).message}`, {hint: 'Try this: check the permissions of $MQ_HOME/data/bodies', cause: error})
    }
    this.segments = new SegmentReader(segDir)
    // everything already in broker.db is committed
    this.committedSeq = this.maxSeq()
    const sync = opts.synchronous ?? 'FULL'
    this.worker = new Worker(new URL('./store-worker.js', import.meta.url), {workerData: {file: this.file, key: this.key, keyId: this.keyId, segmentDir: segDir, segmentStart, synchronous: sync}})
    this.worker.unref()
    this.checkpointer = new Checkpointer(this.file, {synchronous: sync})
    // the writer names the batches one commit covered (it takes every batch queued when it starts one)
    this.worker.on('message', (m: {ids?: number[]; error?: string; closed?: boolean; gone?: number[]}) => {
      if (m.gone) this.segments.gone(m.gone)
      if (m.ids === undefined) return
      const err = m.error ? new UnavailableError('E_STORE_WRITE', `the broker store could not commit: ${m.error}`, {hint: 'Try this: check free disk space and permissions of $MQ_HOME/data'}) : undefined
      for (const id of m.ids) {
        if (this.inflight.length === 0 || this.inflight[0].id !== id) return
        const batch = this.inflight.shift()!
        if (!err && batch.maxSeq > this.committedSeq) this.committedSeq = batch.maxSeq
        for (const w of batch.waiters) w(err)
      }
      this.commits++
      // whatever arrived during that commit forms the next group right away
      if (this.waiters.length > 0) this.post()
      else if (this.ops.length > 0) this.armLazy()
    })
    this.worker.on('error', (err) => {
      this.failure = err
      const done = this.inflight.flatMap((b) => b.waiters)
      this.inflight = []
      const e = new UnavailableError('E_STORE_WRITE', `the broker store's writer failed: ${err.message}`, {hint: 'Try this: restart the broker; check $MQ_HOME/data'})
      for (const w of [...done, ...this.waiters]) w(e)
      this.waiters = []
      this.waiterMarks = []
    })
  }

  private post = (): void => {
    this.timer = undefined
    do this.postGroup()
    while (this.waiters.length > 0 && this.inflight.length < MAX_INFLIGHT && !this.failure)
  }

  private postGroup(): void {
    if (this.lazy) {
      clearTimeout(this.lazy)
      this.lazy = undefined
    }
    if (this.inflight.length >= MAX_INFLIGHT || (this.ops.length === 0 && this.waiters.length === 0)) return
    // a group closes after GROUP_WAITERS waiters: the next one is already being gathered (and can be
    // posted) while this one commits, so a publisher's window flows instead of moving in lockstep
    let ops = this.ops
    let waiters = this.waiters
    if (waiters.length > GROUP_WAITERS) {
      const cut = this.waiterMarks[GROUP_WAITERS - 1]
      ops = this.ops.slice(0, cut)
      this.ops = this.ops.slice(cut)
      this.pendingInsMin = Infinity
      for (const op of this.ops) if (op.t === 'ins' && op.m.seq < this.pendingInsMin) this.pendingInsMin = op.m.seq
      waiters = this.waiters.slice(0, GROUP_WAITERS)
      this.waiters = this.waiters.slice(GROUP_WAITERS)
      this.waiterMarks = this.waiterMarks.slice(GROUP_WAITERS).map((m) => m - cut)
    } else {
      this.ops = []
      this.pendingInsMin = Infinity
      this.waiters = []
      this.waiterMarks = []
    }
    if (this.failure) {
      for (const w of waiters) w(new UnavailableError('E_STORE_WRITE', `the broker store's writer failed: ${this.failure.message}`, {hint: 'Try this: restart the broker'}))
      return
    }
    // a message inserted and deleted within one group (published, delivered and acked between two
    // commits) never touches the disk at all (the writer also drops such pairs across the groups
    // one commit takes: see cancelledIn in store-worker.ts)
    // (an ack mostly deletes a row of an earlier group: a seq below this group's smallest insert is
    // not looked up, and the sets are built only for what can be in them, not two per message)
    let maxSeq = 0
    let minIns = Infinity
    let counts = false
    for (const op of ops) {
      if (op.t === 'ins') {
        if (op.m.seq > maxSeq) maxSeq = op.m.seq
        if (op.m.seq < minIns) minIns = op.m.seq
      } else if (op.t === 'cnt') counts = true
    }
    let deleted: Set<number> | undefined
    for (const op of ops) if (op.t === 'del' && (counts || op.seq >= minIns)) (deleted ??= new Set()).add(op.seq)
    let insertedSet: Set<number> | undefined
    const inserted = (seq: number): boolean => {
      if (seq < minIns) return false
      if (!insertedSet) {
        insertedSet = new Set()
        for (const op of ops) if (op.t === 'ins') insertedSet.add(op.m.seq)
      }
      return insertedSet.has(seq)
    }
    // message records are packed into one transferable buffer per run of message ops (cheaper than
    // structured-cloning thousands of small arrays); definition ops stay tuples, in order
    const wire: (WireOp | Uint8Array)[] = []
    const transfer: ArrayBuffer[] = []
    const shared: Uint8Array[] = []
    let run: Op[] = []
    const flushRun = () => {
      if (run.length === 0) return
      const buf = packMessages(run, shared)
      wire.push(buf)
      transfer.push(buf.buffer as ArrayBuffer)
      run = []
    }
    const published: [number, string, string[], number][] = []
    const forgotten: number[] = []
    for (const op of ops) {
      if (op.t === 'ins') {
        if (!deleted?.has(op.m.seq)) run.push(op)
      } else if (op.t === 'del') {
        if (!inserted(op.seq)) run.push(op)
      } else if (op.t === 'cnt') {
        if (!deleted?.has(op.seq) && !inserted(op.seq)) run.push(op)
      } else if (op.t === 'pub') {
        published.push([op.seq, op.id, op.queues, op.at])
      } else if (op.t === 'fgt') {
        forgotten.push(op.seq)
      } else {
        flushRun()
        wire.push(op.op)
      }
    }
    flushRun()
    // this group's ids as one block row, in the same transaction as the message rows of their publishes
    if (published.length > 0 || forgotten.length > 0) {
      let block: [number, number, string] | null = null
      if (published.length > 0) {
        block = [published[0][0], published[published.length - 1][0], JSON.stringify(published)]
        this.blocks.add(block[0], block[1], published.length)
      }
      const drop: number[] = []
      for (const seq of forgotten) {
        const key = this.blocks.forget(seq)
        if (key === undefined) continue
        if (block && key === block[0]) block = null // all forgotten before it was even written
        else drop.push(key)
      }
      if (block || drop.length > 0) wire.push(['u', block, drop])
    }
    const id = this.batchSeq++
    this.inflight.push({id, maxSeq, waiters})
    // shared bodies are cloned as views of the same memory (no copy)
    this.worker.postMessage({id, ops: wire, shared}, transfer)
  }

  /**
   * Writes nobody waits for (acks, delivery counts, definitions, unconfirmed publishes) do not start a
   * commit (an fsync) of their own: they ride along with the next confirmed publish, or go out after
   * LAZY_COMMIT_MS. Losing such a write in a crash only means a redelivery (at-least-once).
   */
  private enqueue(op: Op): void {
    if (this.closed) return
    this.ops.push(op)
    this.armLazy()
  }

  private armLazy(): void {
    if (this.timer || this.inflight.length > 0 || this.lazy) return
    this.lazy = setTimeout(this.post, LAZY_COMMIT_MS)
  }

  private arm(): void {
    if (this.timer || this.inflight.length >= MAX_INFLIGHT) return
    if (this.lazy) {
      clearTimeout(this.lazy)
      this.lazy = undefined
    }
    this.timer = this.commitIntervalMs > 0 ? setTimeout(this.post, this.commitIntervalMs) : setImmediate(this.post)
  }

  /** Calls cb once everything queued so far is durably committed (with an error if it could not be). */
  afterCommit(cb: CommitCallback): void {
    if (this.closed) {
      cb(new UnavailableError('E_STORE_CLOSED', 'the broker store is closed', {hint: 'Try this: the broker is shutting down; retry against the restarted broker'}))
      return
    }
    this.waiters.push(cb)
    this.waiterMarks.push(this.ops.length)
    this.arm()
  }

  /** Resolves once everything queued so far is committed. */
  flush(): Promise<void> {
    return new Promise((resolve, reject) => this.afterCommit((err) => (err ? reject(err) : resolve())))
  }

  /** A deduplicated publish's id: committed in the group of the message rows queued just before it (see dedupe.ts). */
  rememberPublished(seq: number, messageId: string, queues: string[], at: number): void {
    this.enqueue({at, id: messageId, queues, seq, t: 'pub'})
  }

  /** A settled or expired published id: a lazy write, riding along with the next commit. */
  forgetPublished(seq: number): void {
    this.enqueue({seq, t: 'fgt'})
  }

  *loadPublished(): Generator<{seq: number; messageId: string; queues: string[]; at: number}> {
    const rows = this.db.prepare('SELECT first, last, ids FROM published_blocks ORDER BY first').all() as {first: number; last: number; ids: string}[]
    for (const r of rows) {
      const ids = JSON.parse(r.ids) as [number, string, string[], number][]
      this.blocks.add(r.first, r.last, ids.length)
      for (const [seq, messageId, queues, at] of ids) yield {at, messageId, queues, seq}
    }
  }

  insertMessage(queue: string, m: Message): void {
    if (m.seq < this.pendingInsMin) this.pendingInsMin = m.seq
    this.enqueue({m, queue, t: 'ins'})
  }

  /** size: the body's length, if known (a big one's delete then costs no read of the row: REC_DELETE_BIG) */
  deleteMessage(seq: number, size?: number): void {
    this.enqueue({seq, size, t: 'del'})
  }

  updateDeliveryCount(seq: number, n: number): void {
    // a message whose insert is still queued is packed with its delivery count as it is then: a
    // count op for it would only be dropped again (the common case: delivered before its commit)
    if (seq >= this.pendingInsMin) return
    this.enqueue({n, seq, t: 'cnt'})
  }

  saveExchange(name: string, type: ExchangeType): void {
    this.enqueue({op: ['x', name, type], t: 'wire'})
  }

  saveQueue(q: StoredQueue): void {
    this.enqueue({op: ['q', q.name, q.deadLetter, q.ttlMs, q.maxLength], t: 'wire'})
  }

  saveBinding(exchange: string, queue: string, key: string): void {
    this.enqueue({op: ['b', exchange, queue, key], t: 'wire'})
  }

  deleteQueue(name: string): void {
    this.enqueue({op: ['D', name], t: 'wire'})
  }

  deleteExchange(name: string): void {
    this.enqueue({op: ['X', name], t: 'wire'})
  }

  deleteBinding(exchange: string, queue: string, key: string): void {
    this.enqueue({op: ['B', exchange, queue, key], t: 'wire'})
  }

  /** Deletes a queue's rows with a seq above afterSeq (the part of a purged queue that was only on disk). */
  purgeAfter(name: string, afterSeq: number): void {
    this.enqueue({op: ['P', name, afterSeq], t: 'wire'})
  }

  loadDefinitions(): {exchanges: {name: string; type: ExchangeType}[]; queues: StoredQueue[]; bindings: {exchange: string; queue: string; key: string}[]} {
    const exchanges = this.db.prepare('SELECT name, type FROM exchanges').all() as {name: string; type: ExchangeType}[]
    const queues = (this.db.prepare('SELECT name, dead_letter, ttl_ms, max_length FROM queues').all() as {name: string; dead_letter: string | null; ttl_ms: number | null; max_length: number | null}[]).map((r) => ({
      deadLetter: r.dead_letter,
      maxLength: r.max_length,
      name: r.name,
      ttlMs: r.ttl_ms,
    }))
    const bindings = this.db.prepare('SELECT exchange, queue, routing_key AS key FROM bindings').all() as {exchange: string; queue: string; key: string}[]
    return {bindings, exchanges, queues}
  }

  /**
   * The per-queue index (messages and body bytes stored), as of the last commit: what a restart reads
   * instead of the messages themselves.
   */
  queueIndex(): Map<string, {messages: number; bytes: number}> {
    const out = new Map<string, {messages: number; bytes: number}>()
    for (const r of this.db.prepare('SELECT queue, messages, bytes FROM queue_stats').all() as {queue: string; messages: number; bytes: number}[]) {
      if (r.messages > 0) out.set(r.queue, {bytes: r.bytes, messages: r.messages})
    }
    return out
  }

  /**
   * Paging: up to `limit` messages of a queue with afterSeq < seq <= uptoSeq, in order, decrypted,
   * stopping once `maxBytes` of bodies are read. A row that cannot be decrypted (altered, or sealed
   * under another key) is skipped: logged with its message id and queue, recorded in `unreadable`,
   * never delivered, and left in broker.db untouched so restoring the right key brings it back.
   * `lastSeq` is the last row looked at (read or skipped), `skipped`/`skippedBytes` what was skipped.
   *
   * Hot-path note (issue 17): this runs synchronously on the event loop, one indexed range scan on
   * the rowid (seq) filtered by queue; there is deliberately no (queue, seq) index, which would cost
   * every insert and delete. Queues whose rows interleave with another queue's big backlog scan past
   * those rows. A group (up to GROUP_BYTES_MAX of records, in broker.db or a body segment) is opened once and kept in a small cache.
   */
  readQueue(queue: string, afterSeq: number, uptoSeq: number, limit: number, maxBytes: number): {messages: StoredMessage[]; lastSeq: number; skipped: number; skippedBytes: number} {
    this.pageStmt ??= this.db.prepare(
      'SELECT seq, queue, message_id, exchange, routing_key, headers, body, ts, delivery_count, expires_at, key_id, group_id, COALESCE(size, length(body)) AS size, seg, seg_off FROM messages WHERE seq > ? AND seq <= ? AND queue = ? ORDER BY seq LIMIT ?',
    )
    const messages: StoredMessage[] = []
    let lastSeq = afterSeq
    let bytes = 0
    let skipped = 0
    let skippedBytes = 0
    for (const r of this.pageStmt.iterate(afterSeq, uptoSeq, queue, limit) as Iterable<StoredRow>) {
      lastSeq = r.seq
      const m = this.decodeRow(r)
      if (m) {
        messages.push(m)
        bytes += m.body.length
      } else {
        skipped++
        skippedBytes += r.size ?? 0
      }
      if (bytes >= maxBytes) break
    }
    return {lastSeq, messages, skipped, skippedBytes}
  }

  /** the last few opened groups (paging reads a queue's rows in seq order, so mostly the same group) */
  private readonly groupCache = new Map<number, Map<number, {m: StoredMessage; headers: string}> | string>()
  private pageStmt?: Database.Statement
  private groupStmt?: Database.Statement

  private decodeRow(r: StoredRow): StoredMessage | undefined {
    let body = r.body
    // a legacy plaintext row's headers column is its JSON; a sealed row's is NULL or a BLOB (sealSplit)
    let headers = typeof r.headers === 'string' ? r.headers : null
    if (r.key_id === null) {
      // a row from before encryption at rest: delivered as is, and resealed in place by the writer
      this.legacyPlaintext++
      if (this.legacyPlaintext === 1) this.logger?.warn('message(s) stored before encryption at rest are plaintext in broker.db; resealing them as they are read')
      this.enqueue({op: ['R', r.seq, r.queue, r.message_id, r.exchange, r.routing_key, headers, r.body], t: 'wire'})
    } else {
      let reason: string | undefined
      if (r.key_id !== this.keyId) reason = `sealed under key id ${r.key_id}, but secrets/${STORE_KEY_FILE} has key id ${this.keyId}`
      else if (r.group_id !== null) {
        let g = this.groupCache.get(r.group_id)
        if (g === undefined) {
          this.groupStmt ??= this.db.prepare('SELECT key_id, data, seg, seg_off, seg_len FROM sealed_groups WHERE id = ?')
          g = this.openGroupRecords(this.groupStmt.get(r.group_id) as GroupRow | undefined, r.group_id)
          this.groupCache.set(r.group_id, g)
          if (this.groupCache.size > 4) this.groupCache.delete(this.groupCache.keys().next().value!)
        }
        const rec = typeof g === 'string' ? undefined : g.get(r.seq)
        if (typeof g === 'string') reason = g
        else if (!rec) reason = `its sealed group ${r.group_id} has no record of it (altered or moved)`
        else if (rec.m.queue !== r.queue || rec.m.messageId !== r.message_id || rec.m.exchange !== r.exchange || rec.m.routingKey !== r.routing_key) reason = 'its columns differ from its sealed record (altered)'
        else {
          body = rec.m.body
          headers = rec.headers || null
        }
      } else {
        let sealed = r.body
        // with the addon, a row sealed split whose body is in a segment is read straight into the
        // opener's ciphertext buffer (no buffer of its own per read, and no copy of it)
        let ct: Buffer | undefined
        if (r.seg !== null) {
          try {
            if (this.opener.native && Buffer.isBuffer(r.headers) && r.headers.length >= NONCE_BYTES + 4 + TAG_BYTES) {
              ct = this.opener.splitCiphertext(r.headers, r.size!)
              this.segments.readInto(r.seg, r.seg_off!, r.size!, ct, ct.length - r.size!)
            } else sealed = this.segments.read(r.seg, r.seg_off!, r.size!)
          } catch (error) {
            reason = `its body segment ${r.seg} cannot be read (${(error as Error).message})`
          }
        }
        if (reason === undefined) {
          try {
            const aad = rowAad(r.key_id, r.message_id, r.queue, r.exchange, r.routing_key)
            const o = ct ? this.opener.openSplitCiphertext(aad, r.headers as Buffer, ct) : Buffer.isBuffer(r.headers) ? this.opener.split(aad, r.headers, sealed) : this.opener.record(aad, sealed)
            body = o.body
            headers = o.headers
          } catch (error) {
            reason = `authentication failed, the row was altered or moved (${(error as Error).message})`
          }
        }
      }
      if (reason !== undefined) {
        const u = {messageId: r.message_id, queue: r.queue, reason, seq: r.seq}
        this.unreadable.push(u)
        this.logger?.error('stored message cannot be decrypted: skipped, not delivered (left in broker.db)', {
          ...u,
          hint: `Try this: if secrets/${STORE_KEY_FILE} was replaced, restore the original and restart; otherwise delete the queue to drop it`,
        })
        return undefined
      }
    }
    return {
      body,
      deliveryCount: r.delivery_count,
      exchange: r.exchange,
      expiresAt: r.expires_at,
      headers: headers ? JSON.parse(headers) : {},
      messageId: r.message_id,
      queue: r.queue,
      routingKey: r.routing_key,
      seq: r.seq,
      timestamp: r.ts,
    }
  }

  private openGroupRecords(row: GroupRow | undefined, id: number): Map<number, {m: StoredMessage; headers: string}> | string {
    if (!row) return `its sealed group ${id} is missing`
    if (row.key_id !== this.keyId) return `its group is sealed under key id ${row.key_id}, but secrets/${STORE_KEY_FILE} has key id ${this.keyId}`
    let sealed = row.data
    if (row.seg !== null) {
      try {
        sealed = this.segments.read(row.seg, row.seg_off!, row.seg_len!)
      } catch (error) {
        return `its sealed group ${id} is in body segment ${row.seg}, which cannot be read (${(error as Error).message})`
      }
    }
    try {
      // the opener's reused buffer: every record is copied out of it below
      const plain = this.opener.group(id, sealed)
      const out = new Map<number, {m: StoredMessage; headers: string}>()
      for (let p = 0; p < plain.length; ) {
        const rec = readInsertRecord(plain, p)
        // each body copied out once, here: a slice would pin the whole group (1 MiB) while any of its
        // messages is in memory, and the group's plaintext is garbage as soon as this loop ends
        rec.m.body = Buffer.from(rec.m.body)
        out.set(rec.m.seq, rec)
        p = rec.next
      }
      return out
    } catch (error) {
      return `authentication of its sealed group ${id} failed, it was altered or moved (${(error as Error).message})`
    }
  }

  maxSeq(): number {
    const r = this.db.prepare('SELECT MAX(seq) AS m FROM messages').get() as {m: number | null}
    return r.m ?? 0
  }

  // key directory: public certificates only
  putKey(name: string, encCertPem: string, signCertPem: string): Promise<void> {
    this.enqueue({op: ['k', name, encCertPem, signCertPem], t: 'wire'})
    return this.flush()
  }

  getKey(name: string): {encCertPem: string; signCertPem: string} | null {
    const r = this.db.prepare('SELECT enc_cert, sign_cert FROM keys WHERE name = ?').get(name) as {enc_cert: string; sign_cert: string} | undefined
    return r ? {encCertPem: r.enc_cert, signCertPem: r.sign_cert} : null
  }

  /** Commits what is queued, stops the writer thread and closes the database. */
  async close(): Promise<void> {
    if (this.closed) return
    if (!this.failure) await this.flush().catch(() => {})
    this.closed = true
    if (this.timer) clearTimeout(this.timer as NodeJS.Timeout)
    if (this.lazy) clearTimeout(this.lazy)
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 2000)
      this.worker.once('message', () => {
        clearTimeout(t)
        resolve()
      })
      this.worker.postMessage({close: true})
    })
    await this.worker.terminate()
    await this.checkpointer.close()
    this.segments.close()
    this.opener.dispose()
    this.db.close()
  }
}
