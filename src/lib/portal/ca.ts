import {readFileSync} from 'node:fs'

import {MqError} from '../errors.js'
import {HttpError} from '../http/errors.js'
import {CertificateAuthority, type CertRecord, type RevocationReason} from '../pki/index.js'
import type {RecordsStore} from '../records/store.js'

/** A certificate as the portal lists it. */
export interface CertView {
  name: string
  type: string
  serial: string
  status: string
  not_before: string
  not_after: string
  days_left: number
  revoked_at: string | null
  reason: string | null
  fingerprint: string
}

export interface CertBundle {
  certificate: CertView
  cert_pem: string
  key_pem: string
  ca_pem: string
}

/** The slice of the CA the portal uses (tests may pass their own). */
export interface PortalCa {
  list(): CertView[]
  issue(name: string, opts: {type: 'client' | 'server'; days?: number}): Promise<CertBundle>
  revoke(nameOrSerial: string, reason: RevocationReason): Promise<CertView[]>
}

const DAY = 86_400_000

export const certView = (c: CertRecord, now = Date.now()): CertView => ({
  days_left: Math.floor((Date.parse(c.notAfter) - now) / DAY), fingerprint: c.fingerprint, name: c.name, not_after: c.notAfter, not_before: c.notBefore,
  reason: c.reason ?? null, revoked_at: c.revokedAt ?? null, serial: c.serial, status: c.status, type: c.type,
})

/** CA errors with the HTTP status an API client expects. */
function httpOf(error: unknown): unknown {
  if (!(error instanceof MqError)) return error
  const status = {E_CERT_ALREADY_REVOKED: 409, E_CERT_EXISTS: 409, E_CERT_NOT_FOUND: 404, E_NOT_FOUND: 404}[error.code] ?? (error.code.startsWith('E_BAD_') ? 422 : undefined)
  return status ? new HttpError(status, error.code, error.message, {hint: error.hint}) : error
}

/**
 * The portal's certificate operations on the CA of $MQ_HOME: issued client keys are handed back
 * once and not kept; revocations republish the CRL (servers reload it within their CRL check
 * interval); the records store's clients table follows both.
 */
export function portalCa(ca: CertificateAuthority, store: RecordsStore): PortalCa {
  return {
    async issue(name, opts) {
      let c
      try {
        c = await ca.issue(name, {days: opts.days, returnKey: true, type: opts.type})
      } catch (error) {
        throw httpOf(error)
      }
      if (opts.type === 'client') {
        await store.upsertClient({expires_at: c.notAfter, fingerprint: c.fingerprint, identity: c.name, issued_at: c.notBefore, reason: null, revoked_at: null, serial: c.serial, status: 'active'})
      }
      return {ca_pem: readFileSync(ca.home.caCert, 'utf8'), cert_pem: readFileSync(c.certPath, 'utf8'), certificate: certView(c), key_pem: c.keyPem!}
    },
    list() {
      const now = Date.now()
      return ca.list().map((c) => certView(c, now))
    },
    async revoke(nameOrSerial, reason) {
      let revoked
      try {
        revoked = await ca.revoke(nameOrSerial, reason)
      } catch (error) {
        throw httpOf(error)
      }
      for (const r of revoked) await store.markClientRevoked(r.serial, reason, r.revokedAt)
      return revoked.map((r) => certView(r))
    },
  }
}
