import type {Redis} from 'ioredis'
import {Counter, Histogram, Registry} from 'prom-client'

import type {FastifyError, FastifyInstance} from 'fastify'

import type {ApiPlugin, BrokerPublisher} from '../broker/api-types.js'
import type {HealthComponent} from '../health/index.js'
import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {errorBody, statusOf} from '../http/errors.js'
import {requestError} from '../http/schema.js'
import {type Logger, silentLogger} from '../log.js'
import {CertificateAuthority} from '../pki/index.js'
import {connectRedis, redisReady} from '../worker/keys.js'
import {Delivery} from './delivery.js'
import auditRoutes from './routes/audit.js'
import clientRoutes from './routes/clients.js'
import type {RecordsDeps} from './routes/common.js'
import messageRoutes from './routes/messages.js'
import pipelineRoutes from './routes/pipeline.js'
import statsRoutes from './routes/stats.js'
import userRoutes from './routes/users.js'
import {RecordsStore} from './store.js'

export type {DeliveredMessage} from './delivery.js'

/** The slice of the PKI's CertificateAuthority this plugin uses (structurally compatible). */
export interface CaLike {
  list(): {name: string; serial: string; type: string; notBefore: string; notAfter: string; status: string; revokedAt?: string; reason?: string; fingerprint: string}[]
  revoke(nameOrSerial: string, reason?: never): Promise<{name: string; serial: string}[]>
}

export interface RecordsPluginOptions {
  config: MqConfig
  home: MqHome
  publisher: BrokerPublisher
  logger?: Logger
  /** defaults to the CertificateAuthority under $MQ_HOME/pki, opened lazily */
  ca?: CaLike
  /** an already opened store (tests); else opened from config.store */
  store?: RecordsStore
}

/**
 * The broker's records API: internal endpoints for the ingest pipeline (roles proxy and worker)
 * and operator endpoints (role admin), as route modules (./routes) the composition root mounts on
 * the broker's mutual-TLS HTTPS API.
 */
export async function createRecordsPlugin(opts: RecordsPluginOptions): Promise<ApiPlugin & {store: RecordsStore}> {
  const log = (opts.logger ?? silentLogger).child('records')
  const store = opts.store ?? (await RecordsStore.open({config: opts.config, home: opts.home}))
  let ca = opts.ca
  const getCa = async (): Promise<CaLike> => {
    ca ??= CertificateAuthority.open(opts.home, opts.config.pki) as unknown as CaLike
    return ca
  }

  const registry = new Registry()
  const m = {
    delivered: new Counter({help: 'Messages delivered into the exchange, by client', labelNames: ['client_id'], name: 'mq_records_messages_delivered_total', registers: [registry]}),
    duplicates: new Counter({help: 'Deliveries the broker recognised as already published (e.g. retried after a crash before the record was marked)', name: 'mq_records_publish_duplicates_total', registers: [registry]}),
    failed: new Counter({help: 'Messages marked failed, by client', labelNames: ['client_id'], name: 'mq_records_messages_failed_total', registers: [registry]}),
    registered: new Counter({help: 'Messages registered by proxies, by client', labelNames: ['client_id'], name: 'mq_records_messages_registered_total', registers: [registry]}),
    storeSeconds: new Histogram({buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], help: 'Records store operation latency', labelNames: ['op'], name: 'mq_records_store_seconds', registers: [registry]}),
  }
  const timed = async <T>(op: string, fn: () => Promise<T>): Promise<T> => {
    const end = m.storeSeconds.startTimer({op})
    try {
      return await fn()
    } finally {
      end()
    }
  }
  const delivery = new Delivery(store, opts.publisher, log, m, timed)

  const syncClients = async () => {
    const c = await getCa()
    for (const cert of c.list()) {
      if (cert.type !== 'client') continue
      await store.upsertClient({
        expires_at: cert.notAfter, fingerprint: cert.fingerprint, identity: cert.name, issued_at: cert.notBefore,
        reason: cert.reason ?? null, revoked_at: cert.revokedAt ?? null, serial: cert.serial,
        status: cert.status === 'revoked' ? 'revoked' : cert.status === 'expired' || Date.parse(cert.notAfter) < Date.now() ? 'expired' : 'active',
      })
    }
  }

  const deps: RecordsDeps = {config: opts.config, delivery, getCa, log, metrics: m, publisher: opts.publisher, store, syncClients, timed}

  // The broker itself never needs Redis; the ingest pipeline (proxy -> Redis -> worker) does. Once
  // a proxy or worker has called the internal API, /health also pings redis.url, as "degraded"
  // when it is down: the broker keeps serving, but ingest stalls (the proxy answers 503).
  let pipelineSeen = false
  let redis: Redis | undefined
  const redisHealth = async (): Promise<HealthComponent> => {
    redis ??= connectRedis(opts.config.redis.url, {commandTimeoutMs: 1000})
    const t = Date.now()
    try {
      await redisReady(redis, 1000)
      await redis.ping()
      return {latency_ms: Date.now() - t, status: 'ok'}
    } catch (error) {
      return {
        error: (error as Error).message,
        hint: 'Try this: start Redis or fix redis.url (MQ_REDIS_URL); proxies answer 503 and workers wait until it is back.',
        status: 'degraded',
      }
    }
  }

  // The routes share one encapsulated context: its error handler answers every error in the one
  // JSON shape with the status the error carries (requests are counted by the broker's API,
  // mq_api_requests_total); its hook notes that the Redis pipeline is in use, so /health starts
  // reporting Redis.
  const routes = async (app: FastifyInstance): Promise<void> => {
    app.setErrorHandler((err: FastifyError, req, reply) => {
      const e = requestError(err) ?? err
      const status = statusOf(e)
      if (status >= 500) log.warn('records request failed', {error: err, path: req.url.split('?')[0]})
      return reply.code(status).send(errorBody(e))
    })
    app.addHook('onResponse', (req, reply, done) => {
      if (!pipelineSeen && reply.statusCode < 400 && req.url.startsWith('/internal/')) pipelineSeen = true
      done()
    })
    for (const r of [pipelineRoutes, messageRoutes, clientRoutes, statsRoutes, userRoutes, auditRoutes]) await app.register(r, deps)
  }
  return {
    async close() {
      // let deliveries in progress record their outcome before the store goes away
      await delivery.settle()
      redis?.disconnect()
      await store.close()
    },
    async components() {
      const out: Record<string, HealthComponent> = {}
      const t = Date.now()
      // a database that does not answer within 2 s is as good as down for a health check
      let timer: NodeJS.Timeout | undefined
      const sqlPing = Promise.race([
        timed('ping', () => store.sql.ping()),
        new Promise<never>((_r, reject) => {
          timer = setTimeout(() => reject(new Error('no answer within 2000 ms')), 2000)
        }),
      ]).finally(() => clearTimeout(timer))
      const [sqlResult, redisResult] = await Promise.allSettled([sqlPing, pipelineSeen ? redisHealth() : Promise.resolve(undefined)])
      out.store =
        sqlResult.status === 'fulfilled'
          ? {backend: store.sql.label, latency_ms: Date.now() - t, status: 'ok'}
          : {backend: store.sql.label, error: (sqlResult.reason as Error).message, hint: 'Try this: check that the database runs and store.url (MQ_STORE_URL) is right; registrations and deliveries fail until it is back.', status: 'failing'}
      if (redisResult.status === 'fulfilled' && redisResult.value) out.redis = redisResult.value
      return out
    },
    async metrics() {
      return registry.metrics()
    },
    name: 'records',
    routes,
    store,
  }
}
