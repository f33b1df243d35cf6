import {createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual} from 'node:crypto'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'

import type {MqHome} from '../config/home.js'
import {DataError, PermissionError} from '../errors.js'
import {HttpError} from '../http/errors.js'
import {assertPrivateFile, writeSecretFile} from '../util/fs.js'
import {randomChunk} from '../util/random.js'

/**
 * At-rest protection of message records. Bodies are sealed with AES-256-GCM under a versioned key
 * file ($MQ_HOME/secrets/records.key: one `v<N>:<base64 key>` per line, the highest version seals,
 * every listed version opens, so keys rotate without re-encrypting old rows). Sender numbers are
 * kept only as HMAC-SHA-256 under a secret pepper plus a masked display form.
 */
const NONCE = 12
const TAG = 16

export interface SealedBody {
  keyVersion: number
  /** nonce | ciphertext | tag */
  data: Buffer
}

export class RecordsKeyring {
  private constructor(
    private readonly keys: Map<number, Buffer>,
    readonly current: number,
    readonly file: string,
  ) {}

  /** Loads the key file, creating it (0600) with version 1 on first use. */
  static open(home: MqHome): RecordsKeyring {
    const file = join(home.secrets, 'records.key')
    if (!existsSync(file)) writeSecretFile(file, `v1:${randomBytes(32).toString('base64')}\n`)
    return RecordsKeyring.parse(file)
  }

  /** Adds a new key version; new rows are sealed with it, old rows still open. */
  static rotate(home: MqHome): RecordsKeyring {
    const ring = RecordsKeyring.open(home)
    const lines = [...ring.keys.entries()].sort((a, b) => a[0] - b[0]).map(([v, k]) => `v${v}:${k.toString('base64')}`)
    lines.push(`v${ring.current + 1}:${randomBytes(32).toString('base64')}`)
    writeSecretFile(ring.file, lines.join('\n') + '\n')
    return RecordsKeyring.parse(ring.file)
  }

  private static parse(file: string): RecordsKeyring {
    assertPrivateFile(file)
    const keys = new Map<number, Buffer>()
    for (const [i, raw] of readFileSync(file, 'utf8').split('\n').entries()) {
      const line = raw.trim()
      if (line === '' || line.startsWith('#')) continue
      const m = /^v(\d+):([A-Za-z0-9+/=]+)$/.exec(line)
      const key = m ? Buffer.from(m[2], 'base64') : undefined
      if (!m || key?.length !== 32) {
        throw new DataError('E_RECORDS_KEY', `${file} line ${i + 1} is not "v<version>:<base64 of 32 bytes>".`, {hint: `Try this: restore ${file} from your backup; without it stored bodies cannot be read.`})
      }
      keys.set(Number(m[1]), key)
    }
    if (keys.size === 0) throw new DataError('E_RECORDS_KEY', `${file} holds no key.`, {hint: `Try this: restore ${file} from your backup.`})
    return new RecordsKeyring(keys, Math.max(...keys.keys()), file)
  }

  /** Seals `plain`; `aad` (the message id) binds the ciphertext to its row. */
  seal(plain: Buffer, aad: string): SealedBody {
    const nonce = randomChunk(NONCE)
    const c = createCipheriv('aes-256-gcm', this.keys.get(this.current)!, nonce)
    c.setAAD(Buffer.from(aad))
    const ct = Buffer.concat([c.update(plain), c.final()])
    return {data: Buffer.concat([nonce, ct, c.getAuthTag()]), keyVersion: this.current}
  }

  open(sealed: SealedBody, aad: string): Buffer {
    const key = this.keys.get(sealed.keyVersion)
    if (!key) throw new DataError('E_RECORDS_KEY_VERSION', `Record sealed with key version ${sealed.keyVersion}, which ${this.file} does not hold.`, {hint: 'Try this: restore the older key line into records.key.'})
    if (sealed.data.length < NONCE + TAG) throw new DataError('E_RECORDS_CORRUPT', 'Sealed record is truncated.')
    try {
      const d = createDecipheriv('aes-256-gcm', key, sealed.data.subarray(0, NONCE))
      d.setAAD(Buffer.from(aad))
      d.setAuthTag(sealed.data.subarray(sealed.data.length - TAG))
      return Buffer.concat([d.update(sealed.data.subarray(NONCE, sealed.data.length - TAG)), d.final()])
    } catch (error) {
      throw new DataError('E_RECORDS_CORRUPT', `Sealed record for ${aad} failed authentication (wrong key or tampered row).`, {cause: error})
    }
  }
}

export const PHONE_RE = /^\+[1-9]\d{1,14}$/

/**
 * message_body is limited in Unicode code points, as the seed's pydantic model counts a str (an
 * emoji is one character, not its two UTF-16 units); the proxy and the broker's register check
 * both use this, so what one accepts the other accepts too.
 */
export function assertBodyLength(text: string, max: number): void {
  let n = 0
  for (const _ of text) n++
  if (n > max) throw new HttpError(422, 'E_BODY_TOO_LONG', `message_body has ${n} characters; the limit is ${max}.`, {extra: {field: 'message_body'}, hint: 'Try this: split the text into several messages.'})
}

const RECENT_HASHES = 4096

/** HMAC-SHA-256 of phone numbers under $MQ_HOME/secrets/phone.pepper (created on first use). */
export class PhoneHasher {
  private constructor(private readonly pepper: Buffer) {}

  static open(home: MqHome): PhoneHasher {
    const file = join(home.secrets, 'phone.pepper')
    if (!existsSync(file)) writeSecretFile(file, randomBytes(32).toString('base64') + '\n')
    assertPrivateFile(file)
    const pepper = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64')
    if (pepper.length < 16) throw new PermissionError('E_PEPPER', `${file} holds no usable pepper.`, {hint: `Try this: restore ${file} from your backup.`})
    return new PhoneHasher(pepper)
  }

  /**
   * Recent numbers' hashes: a fresh HMAC per registration was a fifth of the broker's records work
   * under ingest load, and a proxy's traffic comes from few senders. Bounded; memory only.
   */
  private readonly recent = new Map<string, string>()

  hash(number: string): string {
    let h = this.recent.get(number)
    if (h === undefined) {
      h = createHmac('sha256', this.pepper).update(number).digest('hex')
      if (this.recent.size >= RECENT_HASHES) this.recent.clear()
      this.recent.set(number, h)
    }
    return h
  }

  /** Constant-time check of a number against a stored hash. */
  matches(number: string, hash: string): boolean {
    const a = Buffer.from(this.hash(number), 'hex')
    const b = Buffer.from(hash, 'hex')
    return a.length === b.length && timingSafeEqual(a, b)
  }
}

/** "+4915200000000" -> "+4915****0000": the country/area prefix and last four digits only. */
export function maskPhone(number: string): string {
  if (number.length <= 8) return number.slice(0, 2) + '*'.repeat(Math.max(0, number.length - 4)) + number.slice(-2)
  return number.slice(0, 5) + '****' + number.slice(-4)
}
