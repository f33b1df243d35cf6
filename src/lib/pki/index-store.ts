import {closeSync, existsSync, openSync, readFileSync, statSync, unlinkSync} from 'node:fs'
import {join} from 'node:path'

import {DataError, TempFailError} from '../errors.js'
import {writeFileAtomic} from '../util/fs.js'

export type CertType = 'server' | 'client' | 'e2e-enc' | 'e2e-sign'
export const REVOCATION_REASONS = ['unspecified', 'key-compromise', 'ca-compromise', 'affiliation-changed', 'superseded', 'cessation-of-operation'] as const
export type RevocationReason = (typeof REVOCATION_REASONS)[number]

export interface IndexEntry {
  name: string
  serial: string
  type: CertType
  subject: string
  notBefore: string
  notAfter: string
  revoked: boolean
  revokedAt?: string
  reason?: RevocationReason
  fingerprint: string
  certPath: string
  keyPath?: string
}

export interface PkiIndex {
  version: 1
  crlNumber: number
  certs: IndexEntry[]
}

/**
 * pki/index.json holds what the CA issued. Every change happens under pki/index.lock (O_EXCL), so
 * two `mq cert` processes at once serialise instead of losing each other's writes.
 */
export class IndexStore {
  readonly file: string
  private readonly lock: string

  constructor(pkiDir: string) {
    this.file = join(pkiDir, 'index.json')
    this.lock = join(pkiDir, 'index.lock')
  }

  read(): PkiIndex {
    if (!existsSync(this.file)) return {certs: [], crlNumber: 0, version: 1}
    try {
      const parsed = JSON.parse(readFileSync(this.file, 'utf8')) as PkiIndex
      if (!Array.isArray(parsed.certs)) throw new Error('certs is not a list')
      return parsed
    } catch (error) {
      throw new DataError('E_PKI_INDEX_CORRUPT', `${this.file} is corrupt: ${(error as Error).message}`, {hint: 'Try this: restore pki/index.json from a backup.'})
    }
  }

  write(index: PkiIndex): void {
    writeFileAtomic(this.file, JSON.stringify(index, null, 2) + '\n', 0o644)
  }

  /** Runs fn holding the index lock; waits up to 15 s for another process, breaks a lock older than 2 min. */
  async withLock<T>(fn: () => Promise<T> | T): Promise<T> {
    const deadline = Date.now() + 15_000
    for (;;) {
      try {
        closeSync(openSync(this.lock, 'wx', 0o600))
        break
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
        try {
          if (Date.now() - statSync(this.lock).mtimeMs > 120_000) unlinkSync(this.lock)
        } catch {}
        if (Date.now() > deadline) {
          throw new TempFailError('E_PKI_LOCKED', `Another mq process holds ${this.lock}.`, {hint: 'Try this: wait for it to finish, or remove the lock file if no mq cert command is running.'})
        }
        await new Promise((r) => setTimeout(r, 25 + Math.random() * 50))
      }
    }
    try {
      return await fn()
    } finally {
      try {
        unlinkSync(this.lock)
      } catch {}
    }
  }
}
