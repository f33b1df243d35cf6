import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'

import {DataError} from '../errors.js'
import {writeFileAtomic} from '../util/fs.js'
import {withLockFile} from '../util/lockfile.js'

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

  /** Runs fn holding the index lock (see withLockFile). */
  withLock<T>(fn: () => Promise<T> | T): Promise<T> {
    return withLockFile(this.lock, {code: 'E_PKI_LOCKED', holder: 'mq cert'}, fn)
  }
}
