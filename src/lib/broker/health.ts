/**
 * Health of the broker's components as `GET /health` reports them: each component is "ok",
 * "degraded" (still serving, needs attention) or "failing" (something operators rely on is
 * broken); the overall status is the worst of them, and only "failing" answers HTTP 503.
 */
import {existsSync, readFileSync} from 'node:fs'
import type {ConnectionOptions} from 'node:tls'

import * as x509 from '@peculiar/x509'

import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {ConfigError, UnavailableError} from '../errors.js'
import {ApiClient} from '../http/client.js'

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
  uptimeMs: number
  timestamp: string
}

/** The worst of the statuses ("ok" for none). */
export function worst(statuses: HealthStatus[]): HealthStatus {
  let i = 0
  for (const s of statuses) i = Math.max(i, HEALTH_STATUSES.indexOf(s))
  return HEALTH_STATUSES[i]
}

/** HTTP status for a health report: a degraded broker still serves, a failing one does not. */
export const healthHttpStatus = (s: HealthStatus): number => (s === 'failing' ? 503 : 200)

const HOUR = 3_600_000
// relative to MQ_HOME: /health answers anonymous callers, so no absolute paths
const CRL_FILE = 'pki/crl.pem'

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
  let crl: x509.X509Crl
  try {
    crl = new x509.X509Crl(readFileSync(home.crl, 'utf8').replace(/X509 CRL/g, 'CRL'))
  } catch (error) {
    return {error: `cannot parse the CRL: ${(error as Error).message}`, file: CRL_FILE, hint: republish, status: 'failing'}
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
 * GET /health of a broker's HTTPS API, as `mq broker health` reads it. The route is anonymous and
 * read-only, so no client certificate is presented and the broker is checked against our CA
 * without the CRL: the health check must still work when an expired CRL makes every mutual-TLS
 * handshake fail, since that is one of the things it reports. Throws UnavailableError (exit 69)
 * when the broker does not answer.
 */
export async function fetchBrokerHealth(home: MqHome, config: MqConfig, flags: {api?: string} = {}): Promise<{url: string; http: number; report: HealthReport}> {
  const url = flags.api ?? config.client.api
  if (!existsSync(home.caCert)) {
    throw new ConfigError('E_NO_CA', `There is no CA certificate at ${home.caCert} to check the broker against.`, {hint: "Try this: mq broker start (creates a development CA) or --home the broker's MQ_HOME."})
  }
  const tlsOpts: ConnectionOptions = {ca: readFileSync(home.caCert)}
  const client = new ApiClient(url, tlsOpts, config.client.timeout_ms, 1)
  try {
    const r = await client.request<HealthReport>('GET', '/health')
    const body = r.body
    if (typeof body !== 'object' || body === null || !HEALTH_STATUSES.includes(body.status)) {
      throw new UnavailableError('E_HEALTH_ANSWER', `${url}/health answered HTTP ${r.status} without a health report.`, {hint: 'Try this: check that --api (MQ_API) points at the broker\'s HTTPS API port (default 5701).'})
    }
    return {http: r.status, report: body, url}
  } finally {
    client.close()
  }
}
