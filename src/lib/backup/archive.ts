/**
 * The encrypted container of `mq backup`. Layout (docs in README "Backups"):
 *
 *   "MQBACKUP" | u32 header length | header JSON | record*
 *   record = u32 ciphertext length | ciphertext | 16-byte GCM tag
 *
 * The key comes from the passphrase through scrypt (salt and cost in the header). The plaintext is cut
 * into chunks of at most CHUNK bytes, each sealed with AES-256-GCM under nonce = prefix(8) || counter(4)
 * and associated data = header || counter || final flag, so a reordered, dropped, truncated or
 * altered chunk and an edited header all fail authentication, and restore can check as it streams.
 * A key check value (HMAC of a constant) in the header tells a wrong passphrase (exit 77) from an
 * altered archive (exit 65).
 */
import {createCipheriv, createDecipheriv, createHmac, randomBytes, scryptSync, timingSafeEqual} from 'node:crypto'
import {closeSync, openSync, readSync, writeSync} from 'node:fs'

import {DataError, PermissionError} from '../errors.js'

export const MAGIC = Buffer.from('MQBACKUP')
export const CHUNK = 1 << 20
const TAG = 16
const MAX_HEADER = 64 * 1024

export interface ArchiveHeader {
  format: 'mq-backup'
  version: 1
  cipher: 'aes-256-gcm'
  kdf: {name: 'scrypt'; N: number; r: number; p: number; salt: string}
  nonce_prefix: string
  key_check: string
  chunk: number
}

const SCRYPT = {N: 1 << 16, p: 1, r: 8}

function deriveKey(passphrase: string, kdf: ArchiveHeader['kdf']): Buffer {
  if (!Number.isInteger(kdf.N) || kdf.N < 1024 || kdf.N > 1 << 20 || (kdf.N & (kdf.N - 1)) !== 0 || kdf.r < 1 || kdf.r > 32 || kdf.p < 1 || kdf.p > 16) {
    throw new DataError('E_BACKUP_CORRUPT', 'the backup header names scrypt parameters mq does not accept.', {hint: 'Try this: the file is not an mq backup, or it was altered.'})
  }
  return scryptSync(passphrase.normalize('NFC'), Buffer.from(kdf.salt, 'base64'), 32, {N: kdf.N, maxmem: 256 * kdf.N * kdf.r + (1 << 20), p: kdf.p, r: kdf.r})
}

const keyCheck = (key: Buffer) => createHmac('sha256', key).update('mq-backup key check v1').digest()

function aad(header: Buffer, counter: number, final: boolean): Buffer {
  const tail = Buffer.alloc(5)
  tail.writeUInt32BE(counter, 0)
  tail[4] = final ? 1 : 0
  return Buffer.concat([header, tail])
}

function nonce(prefix: Buffer, counter: number): Buffer {
  const n = Buffer.alloc(12)
  prefix.copy(n, 0, 0, 8)
  n.writeUInt32BE(counter, 8)
  return n
}

/** Writes the container to an open fd; push() plaintext, then end(). */
export class ArchiveWriter {
  private readonly key: Buffer
  private readonly headerBytes: Buffer
  private readonly prefix = randomBytes(8)
  private pending: Buffer[] = []
  private pendingLen = 0
  private counter = 0

  constructor(
    private readonly fd: number,
    passphrase: string,
  ) {
    const salt = randomBytes(16)
    const kdf = {name: 'scrypt' as const, ...SCRYPT, salt: salt.toString('base64')}
    this.key = deriveKey(passphrase, kdf)
    const header: ArchiveHeader = {chunk: CHUNK, cipher: 'aes-256-gcm', format: 'mq-backup', kdf, key_check: keyCheck(this.key).toString('base64'), nonce_prefix: this.prefix.toString('base64'), version: 1}
    this.headerBytes = Buffer.from(JSON.stringify(header))
    const len = Buffer.alloc(4)
    len.writeUInt32BE(this.headerBytes.length)
    writeSync(fd, Buffer.concat([MAGIC, len, this.headerBytes]))
  }

  push(data: Buffer): void {
    this.pending.push(data)
    this.pendingLen += data.length
    while (this.pendingLen > CHUNK) {
      const all = Buffer.concat(this.pending)
      this.seal(all.subarray(0, CHUNK), false)
      this.pending = [all.subarray(CHUNK)]
      this.pendingLen = all.length - CHUNK
    }
  }

  end(): void {
    this.seal(Buffer.concat(this.pending), true)
    this.pending = []
    this.pendingLen = 0
  }

  private seal(plain: Buffer, final: boolean): void {
    const c = createCipheriv('aes-256-gcm', this.key, nonce(this.prefix, this.counter))
    c.setAAD(aad(this.headerBytes, this.counter, final))
    const body = Buffer.concat([c.update(plain), c.final()])
    const len = Buffer.alloc(4)
    len.writeUInt32BE(body.length)
    writeSync(this.fd, Buffer.concat([len, body, c.getAuthTag()]))
    this.counter++
  }
}

const corrupt = (why: string) => new DataError('E_BACKUP_CORRUPT', `the backup archive is damaged or was altered: ${why}.`, {hint: 'Try this: use another copy of the backup; this one cannot be trusted.'})

/** Reads and authenticates the container chunk by chunk; next() returns null after the final chunk. */
export class ArchiveReader {
  private readonly fd: number
  private readonly key: Buffer
  private readonly headerBytes: Buffer
  private readonly prefix: Buffer
  private pos = 0
  private counter = 0
  private done = false

  constructor(file: string, passphrase: string) {
    try {
      this.fd = openSync(file, 'r')
    } catch (error) {
      throw new DataError('E_BACKUP_READ', `cannot read the backup ${file}: ${(error as Error).message}`, {hint: 'Try this: check the path.'})
    }
    try {
      const head = this.read(MAGIC.length + 4)
      if (!head || !head.subarray(0, MAGIC.length).equals(MAGIC)) throw new DataError('E_BACKUP_FORMAT', `${file} is not an mq backup archive.`, {hint: 'Try this: give the file written by mq backup create.'})
      const hlen = head.readUInt32BE(MAGIC.length)
      if (hlen > MAX_HEADER) throw corrupt('header too large')
      const hb = this.read(hlen)
      if (!hb) throw corrupt('truncated header')
      this.headerBytes = hb
      let header: ArchiveHeader
      try {
        header = JSON.parse(hb.toString('utf8')) as ArchiveHeader
      } catch {
        throw corrupt('unreadable header')
      }
      if (header.format !== 'mq-backup' || header.version !== 1 || header.cipher !== 'aes-256-gcm' || header.kdf?.name !== 'scrypt' || typeof header.kdf.salt !== 'string') throw corrupt('unknown header')
      this.prefix = Buffer.from(String(header.nonce_prefix), 'base64')
      if (this.prefix.length !== 8) throw corrupt('bad nonce')
      this.key = deriveKey(passphrase, header.kdf)
      const expect = Buffer.from(String(header.key_check), 'base64')
      const got = keyCheck(this.key)
      if (expect.length !== got.length || !timingSafeEqual(expect, got)) {
        throw new PermissionError('E_BACKUP_PASSPHRASE', 'wrong passphrase for this backup.', {hint: 'Try this: check --passphrase-file or MQ_BACKUP_PASSPHRASE.'})
      }
    } catch (error) {
      closeSync(this.fd)
      throw error
    }
  }

  close(): void {
    closeSync(this.fd)
  }

  /** The next authenticated chunk of plaintext, or null at the (authenticated) end. */
  next(): Buffer | null {
    if (this.done) return null
    const lenBuf = this.read(4)
    if (!lenBuf) throw corrupt('truncated (the final chunk is missing)')
    const len = lenBuf.readUInt32BE(0)
    if (len > CHUNK + 64) throw corrupt('chunk too large')
    const body = this.read(len + TAG)
    if (!body) throw corrupt('truncated chunk')
    const ct = body.subarray(0, len)
    const tag = body.subarray(len)
    // a chunk is final when nothing follows it; the flag in the associated data makes that authenticated
    const final = this.atEof()
    try {
      const d = createDecipheriv('aes-256-gcm', this.key, nonce(this.prefix, this.counter))
      d.setAAD(aad(this.headerBytes, this.counter, final))
      d.setAuthTag(tag)
      const plain = Buffer.concat([d.update(ct), d.final()])
      this.counter++
      if (final) this.done = true
      return plain
    } catch {
      throw corrupt(`chunk ${this.counter} fails authentication`)
    }
  }

  private atEof(): boolean {
    const b = Buffer.alloc(1)
    const n = readSync(this.fd, b, 0, 1, this.pos)
    return n === 0
  }

  private read(n: number): Buffer | null {
    const out = Buffer.alloc(n)
    let got = 0
    while (got < n) {
      const r = readSync(this.fd, out, got, n - got, this.pos)
      if (r === 0) return null
      got += r
      this.pos += r
    }
    return out
  }
}

/** Exact-length reads over the plaintext stream of an ArchiveReader. */
export class PlainStream {
  private buf: Buffer = Buffer.alloc(0)

  constructor(private readonly reader: ArchiveReader) {}

  take(n: number): Buffer {
    while (this.buf.length < n) {
      const c = this.reader.next()
      if (c === null) throw corrupt('content ends early')
      this.buf = this.buf.length === 0 ? c : Buffer.concat([this.buf, c])
    }
    const out = this.buf.subarray(0, n)
    this.buf = this.buf.subarray(n)
    return out
  }

  /** Hands the next n bytes to fn in pieces, without holding them all. */
  pipe(n: number, fn: (piece: Buffer) => void): void {
    let left = n
    while (left > 0) {
      if (this.buf.length === 0) {
        const c = this.reader.next()
        if (c === null) throw corrupt('content ends early')
        this.buf = c
      }
      const piece = this.buf.subarray(0, Math.min(left, this.buf.length))
      this.buf = this.buf.subarray(piece.length)
      left -= piece.length
      fn(piece)
    }
  }

  /** Throws unless the stream ends here (authenticated final chunk, no bytes left over). */
  end(): void {
    if (this.buf.length > 0) throw corrupt('trailing content')
    for (;;) {
      const c = this.reader.next()
      if (c === null) return
      if (c.length > 0) throw corrupt('trailing content')
    }
  }
}
