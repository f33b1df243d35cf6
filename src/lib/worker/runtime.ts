import {createServer} from 'node:http'
import type {AddressInfo} from 'node:net'

import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {ApiClient} from '../http/client.js'
import {certificateHealth, checkOwnCertificates, healthHttpStatus} from '../health/index.js'
import type {Logger} from '../log.js'
import {clientTlsOptions} from '../pki/index.js'
import {ensurePipelineCerts, listenError} from '../proxy/runtime.js'
import {connectRedis, redisReady, warnIfRedisVolatile} from './keys.js'
import {Worker} from './worker.js'

export interface RunningWorker {
  worker: Worker
  metricsUrl?: string
  /** stops reading, finishes the messages in hand, closes connections */
  close(): Promise<void>
}

export async function startWorker(home: MqHome, config: MqConfig, logger: Logger, opts: {concurrency?: number; name?: string; metricsHost?: string} = {}): Promise<RunningWorker> {
  const w = config.worker
  const created = await ensurePipelineCerts(home, config, {clients: [w.identity]})
  if (created.length) logger.info('issued development certificates', {created: created.join(',')})
  const tls = clientTlsOptions(home, w.identity)
  checkOwnCertificates(home, [w.identity], logger)
  const redis = connectRedis(config.redis.url)
  const blocking = connectRedis(config.redis.url, {blocking: true})
  try {
    await Promise.all([redisReady(redis), redisReady(blocking)])
  } catch (error) {
    redis.disconnect()
    blocking.disconnect()
    throw error
  }
  await warnIfRedisVolatile(redis, logger)
  const broker = new ApiClient(w.broker_api ?? config.client.api, tls, 10_000, Math.max(8, (opts.concurrency ?? w.concurrency) * 2))
  const worker = new Worker({blocking, broker, concurrency: opts.concurrency, config, consumer: opts.name, logger, redis})
  // Prometheus scrape endpoint; plain HTTP on loopback by default, as scrapers expect
  const metrics = createServer((req, res) => {
    if (req.url === '/metrics') {
      worker.registry
        .metrics()
        .then((text) => {
          res.writeHead(200, {'content-type': worker.registry.contentType})
          res.end(text)
        })
        .catch(() => res.writeHead(500).end())
    } else if (req.url === '/health') {
      // a revoked or expired worker certificate fails every delivery: failing, not ok
      const certificate = certificateHealth(home, [w.identity])
      res.writeHead(healthHttpStatus(certificate.status), {'content-type': 'application/json'})
      res.end(JSON.stringify({busy: worker.busy, components: {certificate}, consumer: worker.consumer, status: certificate.status}))
    } else res.writeHead(404).end()
  })
  let metricsUrl: string | undefined
  const host = opts.metricsHost ?? '127.0.0.1'
  if (w.metrics_port > 0) {
    try {
      await new Promise<void>((resolve, reject) => {
        metrics.once('error', reject)
        metrics.listen(w.metrics_port, host, () => resolve())
      })
    } catch (error) {
      broker.close()
      redis.disconnect()
      blocking.disconnect()
      throw listenError(error, host, w.metrics_port, '--metrics-port (0 turns it off)')
    }
    metricsUrl = `http://${host}:${(metrics.address() as AddressInfo).port}/metrics`
  }
  await worker.start()
  return {
    async close() {
      await worker.stop()
      metrics.close()
      metrics.closeAllConnections()
      broker.close()
      redis.disconnect()
      blocking.disconnect()
    },
    metricsUrl,
    worker,
  }
}
