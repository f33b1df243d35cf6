import {existsSync, readFileSync} from 'node:fs'
import type {ConnectionOptions} from 'node:tls'

import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {wrongServiceError} from '../config/ports.js'
import {ConfigError, MqError, PermissionError, UnavailableError} from '../errors.js'
import {HEALTH_STATUSES, type HealthReport} from '../health/index.js'
import {ApiClient} from '../http/client.js'

/**
 * GET /health of a broker's HTTPS API, as `mq broker health` reads it. The route is anonymous and
 * read-only; the client certificate is presented only to get the details, and the broker is checked
 * against our CA without the CRL: the health check must still work when an expired CRL makes every mutual-TLS
 * handshake fail, since that is one of the things it reports. Throws UnavailableError (exit 69)
 * when the broker does not answer.
 */
export async function fetchBrokerHealth(home: MqHome, config: MqConfig, flags: {api?: string} = {}): Promise<{url: string; http: number; report: HealthReport}> {
  const url = flags.api ?? config.client.api
  if (!existsSync(home.caCert)) {
    throw new PermissionError('E_CA_MISSING', `There is no CA certificate at ${home.caCert} to check the broker against.`, {hint: "Try this: mq broker start (creates a development CA) or --home the broker's MQ_HOME."})
  }
  const tlsOpts: ConnectionOptions = {ca: readFileSync(home.caCert)}
  // the details (latencies, files, errors) are for monitors: present the client identity when this
  // home has it; without one (or when the broker cannot verify it) the answer is the verdicts alone
  const identity = process.env.MQ_IDENTITY ?? config.client.identity
  if (existsSync(home.issuedCert(identity)) && existsSync(home.issuedKey(identity))) Object.assign(tlsOpts, {cert: readFileSync(home.issuedCert(identity)), key: readFileSync(home.issuedKey(identity))})
  const client = new ApiClient(url, tlsOpts, config.client.timeout_ms, 1)
  try {
    let r
    try {
      r = await client.request<HealthReport>('GET', '/health')
    } catch (error) {
      // /health needs no client certificate: a server that demands one, or speaks no TLS or HTTP, is another service
      const u = new URL(url)
      const port = Number(u.port || 443)
      const wrong = error instanceof MqError && (error.code === 'E_WRONG_SERVICE' || (/certificate required/i.test(error.message) && port !== config.broker.api_port))
      if (wrong) throw wrongServiceError(config, u.hostname, port, 'api', error.message)
      throw error
    }
    const body = r.body
    if (typeof body !== 'object' || body === null || !HEALTH_STATUSES.includes(body.status)) {
      throw new UnavailableError('E_HEALTH_ANSWER', `${url}/health answered HTTP ${r.status} without a health report.`, {hint: `Try this: check that --api (MQ_API) points at the broker's HTTPS API port (broker.api_port: ${config.broker.api_port}).`})
    }
    return {http: r.status, report: body, url}
  } finally {
    client.close()
  }
}
