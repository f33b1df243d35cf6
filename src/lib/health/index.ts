/**
 * Health as every server's `GET /health` reports it (broker, proxy, worker): each component is "ok",
 * "degraded" (still serving, needs attention) or "failing" (something operators rely on is
 * broken); the overall status is the worst of them, and only "failing" answers HTTP 503.
 */
import {X509Certificate} from 'node:crypto'
import {existsSync, readFileSync, statSync} from 'node:fs'

import type * as x509 from '@peculiar/x509'

import type {MqHome} from '../config/home.js'
import {normSerial, parseCrl} from '../pki/certs.js'
import {crlSignedBy} from '../pki/tls.js'

export const HEALTH_STATUSES = ['ok', 'degraded', 'failing'] as const
export type HealthStatus = (typeof HEALTH_STATUSES)[number]

export interface HealthComponent {
  status: HealthStatus
  /** what to do about it, starting with "Try this: " (only when not ok) */
  hint?: string
  [k: string]: unknown
}

export interface HealthReport {
  status: HealthStatus
  components: Record<string, HealthComponent>
  connections: number
  uptime_ms: number
  timestamp: string
}

/** The worst of the statuses ("ok" for none). */
export function worst(statuses: HealthStatus[]): HealthStatus {
  let i = 0
  for (const s of statuses) i = Math.max(i, HEALTH_STATUSES.indexOf(s))
  return HEALTH_STATUSES[i]
}

/**
 * What GET /health tells a caller without the monitor right (load balancers, anyone on the network):
 * each component's verdict and its fixed "Try this" hint, nothing about files, hosts, backends or errors.
 */
export function publicHealth(r: HealthReport): Omit<HealthReport, 'connections' | 'uptime_ms'> {
  const components: Record<string, HealthComponent> = {}
  for (const [name, c] of Object.entries(r.components)) components[name] = {status: c.status, ...(c.hint ? {hint: c.hint} : {})}
  return {components, status: r.status, timestamp: r.timestamp}
}

/** HTTP status for a health report: a degraded broker still serves, a failing one does not. */
export const healthHttpStatus = (s: HealthStatus): number => (s === 'failing' ? 503 : 200)

const HOUR = 3_600_000
// relative to MQ_HOME: /health answers anonymous callers, so no absolute paths
const CRL_FILE = 'pki/crl.pem'

/**
 * Parsing the CRL and checking its signature cost ~2 ms of CPU, and /health and /metrics are
 * polled: parsed files are kept until their stamp (mtime, size, inode) changes.
 */
const parsed = new Map<string, {stamp: string; value: unknown}>()
function cachedParse<T>(files: string[], key: string, parse: () => T): T {
  const stamp = files
    .map((f) => {
      const st = statSync(f, {throwIfNoEntry: false})
      return st ? `${st.mtimeMs}:${st.size}:${st.ino}` : '-'
    })
    .join('|')
  const hit = parsed.get(key)
  if (hit && hit.stamp === stamp) return hit.value as T
  const value = parse()
  parsed.set(key, {stamp, value})
  return value
}

/** pki/crl.pem parsed, and whether our CA signed it; kept until the CRL or the CA file changes. */
export function readCrlFile(home: MqHome): {crl: x509.X509Crl; signed: boolean} | {error: Error} {
  return cachedParse([home.crl, home.caCert], `crl:${home.crl}`, () => {
    try {
      const crl = parseCrl(readFileSync(home.crl))
      return {crl, signed: crlSignedBy(crl, home.caCert)}
    } catch (error) {
      return {error: error as Error}
    }
  })
}

/**
 * Freshness of pki/crl.pem. TLS peers (the broker, proxies, workers, clients) check certificates
 * against it, and OpenSSL refuses every handshake once the CRL is past its nextUpdate ("CRL has
 * expired"): so an expired CRL is "failing", and one near expiry (the last quarter of its
 * validity, at most 24 h) is "degraded".
 */
export function crlHealth(home: MqHome, now = Date.now()): HealthComponent {
  const republish = 'Try this: mq cert crl (republishes pki/crl.pem; servers reload it without a restart).'
  if (!existsSync(home.crl)) {
    return {file: CRL_FILE, hint: `Try this: mq cert crl; without ${CRL_FILE} revoked certificates are not refused.`, status: 'degraded'}
  }
  const p = readCrlFile(home)
  if ('error' in p) return {error: `cannot parse the CRL: ${p.error.message}`, file: CRL_FILE, hint: republish, status: 'failing'}
  const crl = p.crl
  // a CRL our CA did not sign is ignored by the servers: the revocations it claims are not in force
  if (!p.signed) {
    return {error: 'the CRL is not signed by our CA (pki/ca.crt): servers ignore it', file: CRL_FILE, hint: 'Try this: mq cert crl (republishes pki/crl.pem signed by this CA).', status: 'failing'}
  }
  const thisUpdate = crl.thisUpdate.getTime()
  const base = {file: CRL_FILE, revoked: crl.entries.length, this_update: crl.thisUpdate.toISOString()}
  if (!crl.nextUpdate) return {...base, next_update: null, status: 'ok'}
  const next = crl.nextUpdate.getTime()
  const left = next - now
  const out = {...base, expires_in_s: Math.round(left / 1000), next_update: crl.nextUpdate.toISOString()}
  if (left <= 0) {
    return {...out, hint: `${republish} The CRL expired at ${out.next_update}: TLS clients and servers refuse handshakes until it is republished.`, status: 'failing'}
  }
  const warn = Math.min(24 * HOUR, Math.max(0, next - thisUpdate) / 4)
  if (left <= warn) {
    return {...out, hint: `${republish} The CRL expires at ${out.next_update}; after that TLS clients and servers refuse handshakes.`, status: 'degraded'}
  }
  return {...out, status: 'ok'}
}

/**
 * A server's own certificates (pki/issued/NAME.crt) against the CRL and their validity: a server
 * whose certificate was revoked (e.g. replaced by a concurrent re-issue) or expired is refused by
 * every peer, so it says so at start and in its /health as "failing".
 */
export function certificateHealth(home: MqHome, names: string[], now = Date.now()): HealthComponent {
  let revoked = new Set<string>()
  try {
    if (existsSync(home.crl)) {
      const p = readCrlFile(home)
      if ('crl' in p) revoked = new Set(p.crl.entries.map((e) => normSerial(e.serialNumber)))
    }
  } catch {
    // an unreadable CRL is the crl component's business
  }
  const problems: string[] = []
  const certs = names.map((name) => {
    try {
      const file = home.issuedCert(name)
      const c = cachedParse([file], `cert:${file}`, () => new X509Certificate(readFileSync(file)))
      const serial = normSerial(c.serialNumber)
      const state = revoked.has(serial) ? 'revoked' : Date.parse(c.validTo) < now ? 'expired' : 'ok'
      if (state !== 'ok') problems.push(`the certificate of ${name} (serial ${serial}) is ${state}: peers refuse it`)
      return {name, serial, status: state}
    } catch (error) {
      problems.push(`cannot read the certificate of ${name}: ${(error as Error).message}`)
      return {name, status: 'unreadable'}
    }
  })
  if (problems.length === 0) return {certificates: certs, status: 'ok'}
  return {certificates: certs, error: problems.join('; '), hint: `Try this: mq cert issue ${names[0]} --type <server|client> --force for each one named, then restart this server.`, status: 'failing'}
}

/** At start: a server whose own certificate is revoked or expired says so (peers will refuse it). */
export function checkOwnCertificates(home: MqHome, names: string[], logger: {error: (msg: string, fields?: Record<string, unknown>) => void}): HealthComponent {
  const c = certificateHealth(home, names)
  if (c.status !== 'ok') logger.error('this server\'s own certificate is not usable: peers will refuse it', {error: c.error, hint: c.hint})
  return c
}
