import cluster from 'node:cluster'

import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {ConfigError} from '../errors.js'
import {ApiClient} from '../http/client.js'
import {type MetricsListener, startMetricsListener} from '../http/metrics-listener.js'
import {certificateHealth, checkOwnCertificates} from '../health/index.js'
import type {Logger} from '../log.js'
import {CertificateAuthority, CrlWatcher, clientTlsOptions, ensureCrlAtStart, serverTlsOptions} from '../pki/index.js'
import {connectRedis, redisReady, warnIfRedisVolatile} from '../worker/keys.js'
import {ProxyServer} from './server.js'

export interface RunningProxy {
  url: string
  metricsUrl?: string
  server: ProxyServer
  close(): Promise<void>
}

/**
 * Certificates a pipeline process needs. With a local CA (development) missing ones are issued;
 * otherwise the PKI's own "not found" error tells the operator what to issue.
 */
export async function ensurePipelineCerts(home: MqHome, config: MqConfig, want: {servers?: string[]; clients?: string[]}): Promise<string[]> {
  const ca = CertificateAuthority.open(home, config.pki, {passphrase: process.env.MQ_CA_PASSPHRASE})
  if (!ca.exists()) return []
  return ca.ensureDevelopment(want)
}

export async function startProxy(home: MqHome, config: MqConfig, logger: Logger): Promise<RunningProxy> {
  const p = config.proxy
  const created = await ensurePipelineCerts(home, config, {clients: [p.identity], servers: [p.server_identity]})
  if (created.length) logger.info('issued development certificates', {created: created.join(',')})
  await ensureCrlAtStart(home, config.pki, logger)
  const tls = serverTlsOptions(home, p.server_identity)
  checkOwnCertificates(home, [p.server_identity, p.identity], logger)
  const redis = connectRedis(config.redis.url, {autoPipeline: true})
  try {
    await redisReady(redis)
  } catch (error) {
    redis.disconnect()
    throw error
  }
  await warnIfRedisVolatile(redis, logger)
  const crl = new CrlWatcher(home, config.broker.crl_check_interval_ms)
  // register calls must fail fast enough for a 503 within one second
  const broker = new ApiClient(p.broker_api ?? config.client.api, clientTlsOptions(home, p.identity), 900, 256)
  const server = new ProxyServer({broker, certificates: () => certificateHealth(home, [p.server_identity, p.identity]), config, logger, redis, revoked: () => crl.revoked(), tls})
  crl.on('change', (pem: Buffer, revoked: Set<string>) => {
    server.updateTls({crl: pem})
    logger.info('CRL reloaded', {revoked: revoked.size})
  })
  crl.start()
  let addr
  try {
    addr = await server.listen(p.port, p.host)
  } catch (error) {
    crl.stop()
    broker.close()
    redis.disconnect()
    throw listenError(error, p.host, p.port, '--port')
  }
  // with --processes N only the first proxy process serves the loopback metrics (one port, one listener)
  let metrics: MetricsListener | undefined
  if (p.metrics_port > 0 && (!cluster.isWorker || cluster.worker?.id === 1)) {
    try {
      metrics = await startMetricsListener({flag: 'proxy.metrics_port (MQ_PROXY_METRICS_PORT)', port: p.metrics_port, text: () => server.registry.metrics()})
    } catch (error) {
      crl.stop()
      await server.close()
      redis.disconnect()
      throw error
    }
  }
  return {
    async close() {
      crl.stop()
      await metrics?.close()
      await server.close()
      redis.disconnect()
    },
    metricsUrl: metrics?.url,
    server,
    url: `https://${p.host}:${addr.port}`,
  }
}

/** EADDRINUSE and friends as a clear configuration error. */
export function listenError(error: unknown, host: string, port: number, flag: string): Error {
  const code = (error as NodeJS.ErrnoException)?.code
  if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
    return new ConfigError('E_LISTEN', `Cannot listen on ${host}:${port}: ${code === 'EADDRINUSE' ? 'the port is in use' : code}.`, {cause: error, hint: `Try this: another ${flag} (or stop what uses it).`})
  }
  return error as Error
}
