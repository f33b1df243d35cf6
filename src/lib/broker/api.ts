/**
 * The broker's HTTPS API (mutual TLS). GET /health answers without a client certificate (load
 * balancers, `curl -k`); every other route needs a certificate from our CA, and its CN's roles
 * (broker.permissions) decide what it may call. The routes are fastify route modules (./api/),
 * the broker's own and the ones ApiPlugins bring; the HTTPS server under them is ours, with the
 * hard handshake deadline and caps on unauthenticated sockets of net/pending.
 */
import https from 'node:https'
import type tls from 'node:tls'

import type {FastifyInstance} from 'fastify'
import {Counter, Gauge, Registry, collectDefaultMetrics} from 'prom-client'

import {type PendingLimits, guardHandshakes} from '../net/pending.js'
import {listenOn} from '../util/net.js'
import {errorText} from '../errors.js'
import type {MqHome} from '../config/home.js'
import type {Logger} from '../log.js'
import type {ApiPlugin} from './api-types.js'
import {type PeerCert, buildApiApp} from './api/app.js'
import {exchangeRoutes} from './api/routes/exchanges.js'
import {healthRoutes} from './api/routes/health.js'
import {messageRoutes} from './api/routes/messages.js'
import {metricsRoutes} from './api/routes/metrics.js'
import {queueRoutes} from './api/routes/queues.js'
import {statsRoutes} from './api/routes/stats.js'
import type {BrokerEngine} from './backend.js'
import {registerCrlMetrics} from '../health/crl-metrics.js'
import {type HealthComponent, type HealthReport, certificateHealth, crlHealth, worst} from '../health/index.js'
import type {ResolvedPermissions} from './permissions.js'

export interface ApiServerOptions {
  engine: BrokerEngine
  logger: Logger
  tls: tls.TlsOptions
  plugins: ApiPlugin[]
  permissionsFor: (identity: string) => ResolvedPermissions
  maxBody: number
  connections: () => number
  isRevoked?: (serial: string) => boolean
  /** for the CRL freshness component of /health (pki/crl.pem); absent in tests without a home */
  home?: MqHome
  memoryWatermarkBytes?: number
  /** hard handshake deadline and caps on sockets still in the handshake (broker.handshake_timeout_ms, max_handshakes...) */
  handshakes?: PendingLimits
  /** the broker's own certificate (pki/issued/<identity>.crt), reported revoked/expired in /health */
  identity?: string
}

export class ApiServer {
  readonly server: https.Server
  /** the fastify application on the server (inject() in tests) */
  readonly app: FastifyInstance
  readonly registry = new Registry()
  private requests!: Counter<'route' | 'method' | 'status'>
  private ready?: PromiseLike<unknown>

  constructor(
    private readonly opts: ApiServerOptions,
    /** tests only: who is calling, for inject() requests that have no TLS socket */
    peer?: (req: import('node:http').IncomingMessage) => PeerCert | null,
  ) {
    // /health may be called without a certificate, so the handshake requests one but does not require it
    const server = https.createServer({...opts.tls, rejectUnauthorized: false, requestCert: true})
    this.server = server
    server.on('tlsClientError', () => {})
    if (opts.handshakes) guardHandshakes(server, opts.handshakes, opts.logger, 'API')
    // the identity is read once per connection (peerIdentity): a renegotiation must not change it
    server.on('secureConnection', (s: tls.TLSSocket) => s.disableRenegotiation())
    server.headersTimeout = 10_000
    server.requestTimeout = 30_000
    this.metrics()
    const {engine} = opts
    this.app = buildApiApp({
      isRevoked: opts.isRevoked,
      logger: opts.logger,
      maxBody: opts.maxBody,
      onAnswer: (route, method, status) => this.requests.inc({method, route, status: String(status)}),
      peer,
      permissionsFor: opts.permissionsFor,
      routes: [
        healthRoutes(() => this.health()),
        metricsRoutes(() => this.metricsText(), this.registry.contentType),
        statsRoutes(engine, opts.connections),
        queueRoutes(engine),
        exchangeRoutes(engine),
        messageRoutes(engine),
        ...opts.plugins.map((p) => p.routes),
      ],
      serverFactory: (handler) => {
        server.on('request', handler)
        return server
      },
    })
  }

  setSecureContext(options: tls.TlsOptions): void {
    this.server.setSecureContext(options)
  }

  async listen(port: number, host: string): Promise<number> {
    // every route module is registered before the first connection is accepted
    this.ready ??= this.app.ready().then(() => undefined)
    await this.ready
    return listenOn(this.server, port, host)
  }

  async close(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((r) => this.server.close(() => r()))
    await this.app.close().catch((error) => this.opts.logger.warn('API close failed', {error: errorText(error)}))
    for (const p of this.opts.plugins) await p.close?.()
  }

  /** The broker's and its plugins' metrics in the Prometheus text format (mTLS /metrics and the loopback listener). */
  async metricsText(): Promise<string> {
    let text = await this.registry.metrics()
    for (const p of this.opts.plugins) if (p.metrics) text += (await p.metrics()) + '\n'
    return text
  }

  private metrics(): void {
    const {engine, connections} = this.opts
    const reg = this.registry
    collectDefaultMetrics({prefix: 'mq_broker_', register: reg})
    if (this.opts.home) registerCrlMetrics(this.opts.home, reg)
    if (this.opts.memoryWatermarkBytes) {
      const bytes = this.opts.memoryWatermarkBytes
      new Gauge({
        collect(this: Gauge) {
          this.set(bytes)
        },
        help: 'broker.memory_watermark_bytes: resident memory above this is alerted on (monitoring/alerts.yml)',
        name: 'mq_broker_memory_watermark_bytes',
        registers: [reg],
      })
    }
    // every API request (builtin and plugin routes), by route pattern: one family for the concept
    this.requests = new Counter({help: 'HTTPS API requests, by route pattern, method and status', labelNames: ['route', 'method', 'status'], name: 'mq_api_requests_total', registers: [reg]})
    const perQueue = (name: string, help: string, pick: (q: ReturnType<BrokerEngine['listQueues']>[number]) => number) =>
      new Gauge({
        collect(this: Gauge) {
          this.reset()
          for (const q of engine.listQueues()) this.set({queue: q.name}, pick(q))
        },
        help,
        labelNames: ['queue'],
        name,
        registers: [reg],
      })
    perQueue('mq_queue_messages', 'messages ready in the queue', (q) => q.messages)
    perQueue('mq_queue_memory_messages', 'ready messages held in memory (a durable queue keeps a window, the rest on disk)', (q) => q.memoryMessages ?? q.messages)
    perQueue('mq_queue_memory_bytes', 'body bytes of the ready messages held in memory', (q) => q.memoryBytes ?? 0)
    perQueue('mq_queue_disk_bytes', 'body bytes of the ready messages held only on disk (paged out)', (q) => q.diskBytes ?? 0)
    perQueue('mq_queue_unacked', 'messages delivered and not yet acknowledged', (q) => q.unacked)
    perQueue('mq_queue_consumers', 'consumers of the queue', (q) => q.consumers)
    perQueue('mq_queue_published_total', 'messages enqueued since start', (q) => q.published)
    perQueue('mq_queue_delivered_total', 'deliveries since start', (q) => q.delivered)
    perQueue('mq_queue_acked_total', 'acknowledgements since start', (q) => q.acked)
    new Gauge({
      collect(this: Gauge) {
        this.set(engine.memory.alarm ? 1 : 0)
      },
      help: '1 while the broker is above broker.memory_high_watermark and publishers are paused',
      name: 'mq_memory_alarm',
      registers: [reg],
    })
    new Gauge({
      collect(this: Gauge) {
        this.set(engine.memory.highWatermark)
      },
      help: 'broker.memory_high_watermark in bytes (0 = none)',
      name: 'mq_memory_high_watermark_bytes',
      registers: [reg],
    })
    new Gauge({
      collect(this: Gauge) {
        this.set(connections())
      },
      help: 'open client connections',
      name: 'mq_connections',
      registers: [reg],
    })
    // cluster mode: the nodes as this one sees them (every node answers for the whole cluster)
    new Gauge({
      collect(this: Gauge) {
        this.reset()
        const cl = engine.stats().cluster
        for (const n of cl?.nodes ?? []) this.set({node: n.consumer}, n.alive ? n.lastHeartbeatMsAgo / 1000 : -1)
      },
      help: 'cluster mode: seconds since each node\'s last heartbeat (-1: dead, its unacked messages are claimed)',
      labelNames: ['node'],
      name: 'mq_cluster_node_heartbeat_age_seconds',
      registers: [reg],
    })
    new Gauge({
      collect(this: Gauge) {
        const t = engine.totals
        this.set({what: 'published'}, t.published)
        this.set({what: 'delivered'}, t.delivered)
        this.set({what: 'acknowledged'}, t.acknowledged)
        this.set({what: 'dead_lettered'}, t.deadLettered)
        this.set({what: 'unroutable'}, t.unroutable)
      },
      help: 'message totals since start',
      labelNames: ['what'],
      name: 'mq_messages_total',
      registers: [reg],
    })
  }

  /** The components of GET /health: engine, CRL freshness, and what plugins report (store, redis). */
  async health(now = Date.now()): Promise<HealthReport> {
    const {engine} = this.opts
    const mem = engine.memory.state()
    const memory = {alarm: mem.alarm, high_watermark: mem.highWatermark, rss: mem.rss}
    const components: Record<string, HealthComponent> = {
      // above the memory watermark the broker still serves consumers, but publishers wait: degraded, with why
      engine: mem.alarm
        ? {hint: 'Try this: start consumers to drain the queues, or raise broker.memory_high_watermark', memory, queues: engine.queues.size, reason: `memory use ${mem.rss} bytes is above the high watermark of ${mem.highWatermark} bytes: publishers are paused`, status: 'degraded'}
        : {memory, queues: engine.queues.size, status: 'ok'},
    }
    if (this.opts.home) components.crl = crlHealth(this.opts.home, now)
    if (this.opts.home && this.opts.identity) components.certificate = certificateHealth(this.opts.home, [this.opts.identity], now)
    await Promise.all(
      this.opts.plugins.map(async (p) => {
        try {
          if (p.components) Object.assign(components, await p.components())
          if (p.health) {
            const h = await p.health()
            components[p.name] = {...h, status: h.ok ? 'ok' : 'failing'}
          }
        } catch (error) {
          components[p.name] = {error: errorText(error), ok: false, status: 'failing'}
        }
      }),
    )
    const status = worst(Object.values(components).map((c) => c.status))
    return {components, connections: this.opts.connections(), status, timestamp: new Date(now).toISOString(), uptime_ms: engine.stats().uptimeMs}
  }
}
