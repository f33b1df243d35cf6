import type {AddressInfo} from 'node:net'

import type {FastifyInstance} from 'fastify'

import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {ApiClient} from '../http/client.js'
import {type MetricsListener, startMetricsListener} from '../http/metrics-listener.js'
import type {Logger} from '../log.js'
import {CertificateAuthority, clientTlsOptions, serverTlsOptions} from '../pki/index.js'
import {ensurePipelineCerts, listenError} from '../proxy/runtime.js'
import {RecordsStore} from '../records/store.js'
import {buildPortalApp} from './app.js'
import {portalCa} from './ca.js'
import {PortalMetrics} from './metrics.js'
import {TokenService, loadSigningKey} from './tokens.js'

export interface RunningPortal {
  url: string
  app: FastifyInstance
  metricsUrl?: string
  close(): Promise<void>
}

/**
 * `mq portal start`: HTTPS with a server certificate from our CA (issued on first start, like the
 * broker's), the records store, the CA and the broker's API (mutual TLS, portal identity).
 */
export async function startPortal(home: MqHome, config: MqConfig, logger: Logger): Promise<RunningPortal> {
  const p = config.portal
  const created = await ensurePipelineCerts(home, config, {clients: [p.identity], servers: [p.server_identity]})
  if (created.length) logger.info('issued development certificates', {created: created.join(',')})
  // browsers present no client certificate: server-side TLS only
  const {requestCert: _r, rejectUnauthorized: _u, crl: _c, ...tls} = serverTlsOptions(home, p.server_identity)
  const store = await RecordsStore.open({config, home})
  const ca = portalCa(CertificateAuthority.open(home, config.pki), store)
  const api = new ApiClient(p.broker_api ?? config.client.api, clientTlsOptions(home, p.identity), 5000, 8)
  const metrics = new PortalMetrics(() => ca.list())
  const tokens = new TokenService(store, loadSigningKey(home), {accessS: p.access_ttl_s, refreshS: p.refresh_ttl_s})
  const app = await buildPortalApp({broker: {stats: () => api.call('GET', '/api/stats')}, ca, config, logger, metrics, store, tokens}, {https: tls})
  let metricsListener: MetricsListener | undefined
  try {
    await app.listen({host: p.host, port: p.port})
    if (p.metrics_port > 0) metricsListener = await startMetricsListener({flag: '--metrics-port', port: p.metrics_port, text: () => metrics.text()})
  } catch (error) {
    await app.close()
    api.close()
    await store.close()
    throw listenError(error, p.host, p.port, '--port')
  }
  const port = (app.server.address() as AddressInfo).port
  return {
    app,
    async close() {
      await metricsListener?.close()
      await app.close()
      api.close()
      await store.close()
    },
    metricsUrl: metricsListener?.url,
    url: `https://${p.host.includes(':') ? `[${p.host}]` : p.host}:${port}`,
  }
}
