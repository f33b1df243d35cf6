/**
 * The broker's HTTPS API (mutual TLS). GET /health answers without a client certificate (load
 * balancers, `curl -k`); every other route needs a certificate from our CA, and its CN's roles
 * (broker.permissions) decide what it may call. ApiPlugins mount their routes here.
 */
import https from 'node:https'
import type {IncomingMessage, ServerResponse} from 'node:http'
import type tls from 'node:tls'

import {Counter, Gauge, Registry, collectDefaultMetrics} from 'prom-client'

import {type PendingLimits, guardHandshakes} from '../net/pending.js'
import {listenOn} from '../util/net.js'
import {errorText, isMqError} from '../errors.js'
import type {MqHome} from '../config/home.js'
import type {Logger} from '../log.js'
import {peerIdentity} from '../pki/index.js'
import type {ApiContext, ApiPlugin, ApiRequest, ApiResponse, ApiRoute} from './api-types.js'
import type {BrokerEngine} from './backend.js'
import {registerCrlMetrics} from '../health/crl-metrics.js'
import {type HealthComponent, type HealthReport, certificateHealth, crlHealth, healthHttpStatus, publicHealth, worst} from '../health/index.js'
import {type ResolvedPermissions, monitorForbidden} from './permissions.js'

/** queue names, client ids, statuses and figures: the monitor right (admins have it) */
const MONITOR = ['monitor']

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])

interface CompiledRoute {
  route: ApiRoute
  re: RegExp
  names: string[]
  anonymous?: boolean
}

function compile(route: ApiRoute, anonymous = false): CompiledRoute {
  const names: string[] = []
  const re = new RegExp(
    '^' +
      route.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, (_m, n: string) => {
        names.push(n)
        return '([^/]+)'
      }) +
      '/?$',
  )
  return {anonymous, names, re, route}
}

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
  private readonly routes: CompiledRoute[] = []
  readonly registry = new Registry()
  private requests!: Counter<'route' | 'method' | 'status'>

  constructor(private readonly opts: ApiServerOptions) {
    // /health may be called without a certificate, so the handshake requests one but does not require it
    this.server = https.createServer({...opts.tls, rejectUnauthorized: false, requestCert: true}, (req, res) => {
      this.handle(req, res).catch((error) => {
        opts.logger.error('API handler failed', {error: errorText(error)})
        if (!res.headersSent) this.reply(res, {body: {error: {code: 'E_INTERNAL', message: 'internal error'}}, status: 500})
      })
    })
    this.server.on('tlsClientError', () => {})
    if (opts.handshakes) guardHandshakes(this.server, opts.handshakes, opts.logger, 'API')
    // the identity is read once per connection (peerIdentity): a renegotiation must not change it
    this.server.on('secureConnection', (s: tls.TLSSocket) => s.disableRenegotiation())
    this.server.headersTimeout = 10_000
    this.server.requestTimeout = 30_000
    this.builtins()
    for (const p of opts.plugins) for (const r of p.routes) this.routes.push(compile(r))
    this.metrics()
  }

  setSecureContext(options: tls.TlsOptions): void {
    this.server.setSecureContext(options)
  }

  listen(port: number, host: string): Promise<number> {
    return listenOn(this.server, port, host)
  }

  async close(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((r) => this.server.close(() => r()))
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

  private builtins(): void {
    const {engine} = this.opts
    const json = (body: unknown, status = 200): ApiResponse => ({body, status})
    this.routes.push(
      compile(
        {
          handler: async (_req, ctx) => {
            const h = await this.health()
            // details (latencies, backends, error texts, files) only for monitors; anyone else sees the verdicts
            return json(ctx.roles.includes('monitor') ? h : publicHealth(h), healthHttpStatus(h.status))
          },
          method: 'GET',
          path: '/health',
        },
        true,
      ),
    )
    this.routes.push(
      compile({
        handler: async () => ({body: await this.metricsText(), headers: {'content-type': this.registry.contentType}, status: 200}),
        method: 'GET',
        path: '/metrics',
        roles: MONITOR,
      }),
    )
    this.routes.push(compile({handler: async () => json(engine.stats(this.opts.connections())), method: 'GET', path: '/api/stats', roles: MONITOR}))
    this.routes.push(compile({handler: async () => json(engine.listQueues()), method: 'GET', path: '/api/queues', roles: MONITOR}))
    this.routes.push(compile({handler: async () => json({bindings: engine.listBindings(), exchanges: engine.listExchanges()}), method: 'GET', path: '/api/exchanges', roles: MONITOR}))
    this.routes.push(
      compile({
        handler: async (req) => {
          const st = await engine.messageStatus(req.params.id)
          return st ? json(st) : json({error: {code: 'E_NOT_FOUND', message: `no status for message ${req.params.id}`}}, 404)
        },
        method: 'GET',
        path: '/api/messages/:id',
        roles: MONITOR,
      }),
    )
    this.routes.push(compile({handler: async (req) => json({messages: await engine.deleteQueue(req.params.name)}), method: 'DELETE', path: '/api/queues/:name', roles: ['admin']}))
    this.routes.push(compile({handler: async (req) => json({messages: await engine.purgeQueue(req.params.name)}), method: 'POST', path: '/api/queues/:name/purge', roles: ['admin']}))
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

  private reply(res: ServerResponse, r: ApiResponse): void {
    let body: Buffer
    const headers: Record<string, string> = {...r.headers}
    if (r.body === undefined) body = Buffer.alloc(0)
    else if (Buffer.isBuffer(r.body)) body = r.body
    else if (typeof r.body === 'string') {
      body = Buffer.from(r.body)
      headers['content-type'] ??= 'text/plain; charset=utf-8'
    } else {
      body = Buffer.from(JSON.stringify(r.body))
      headers['content-type'] ??= 'application/json'
    }
    headers['content-length'] = String(body.length)
    res.writeHead(r.status, headers)
    res.end(body)
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let route = 'other'
    // labels stay bounded whatever a client sends: unknown paths are "other", odd methods too
    const m = req.method ?? 'GET'
    res.once('finish', () => this.requests.inc({method: KNOWN_METHODS.has(m) ? m : 'other', route, status: String(res.statusCode)}))
    const url = new URL(req.url ?? '/', 'https://broker')
    const method = req.method ?? 'GET'
    let match: {c: CompiledRoute; params: Record<string, string>} | undefined
    let pathMatched = false
    for (const c of this.routes) {
      const m = c.re.exec(url.pathname)
      if (!m) continue
      pathMatched = true
      if (c.route.method !== method) continue
      const params: Record<string, string> = {}
      c.names.forEach((n, i) => {
        try {
          params[n] = decodeURIComponent(m[i + 1])
        } catch {
          params[n] = m[i + 1]
        }
      })
      match = {c, params}
      route = c.route.path
      break
    }
    const err = (status: number, code: string, message: string, hint?: string) => this.reply(res, {body: {error: {code, message, ...(hint ? {hint} : {})}}, status})
    if (!match) {
      req.resume()
      return pathMatched ? err(405, 'E_METHOD', `${method} is not allowed on ${url.pathname}`) : err(404, 'E_NOT_FOUND', `no route ${method} ${url.pathname}`, 'Try this: GET /health, /metrics, /api/stats, /api/queues')
    }
    const sock = req.socket as tls.TLSSocket
    const peer = peerIdentity(sock)
    if (peer && this.opts.isRevoked?.(peer.serial)) {
      req.resume()
      return err(401, 'E_CERT_REVOKED', `certificate serial ${peer.serial} is revoked`)
    }
    const ctx: ApiContext = {identity: peer?.cn ?? null, remote: sock.remoteAddress ?? '', roles: peer ? this.opts.permissionsFor(peer.cn).roles : []}
    if (!match.c.anonymous) {
      if (!peer) {
        req.resume()
        return err(401, 'E_TLS_CLIENT_CERT', 'this route needs a client certificate from the broker\'s CA', 'Try this: curl --cert pki/issued/admin.crt --key pki/issued/admin.key --cacert pki/ca.crt ...')
      }
      const perms = this.opts.permissionsFor(peer.cn)
      ctx.roles = perms.roles
      const need = match.c.route.roles ?? []
      if (need.length > 0 && !need.some((r) => perms.roles.includes(r))) {
        req.resume()
        if (need.length === 1 && need[0] === 'monitor') {
          const e = monitorForbidden(peer.cn, `${method} ${url.pathname}`)
          return err(403, e.code, e.message, e.hint)
        }
        return err(403, 'E_FORBIDDEN', `${peer.cn} lacks a role among ${need.join(', ')}`, 'Try this: grant the role in broker.permissions')
      }
    }
    const chunks: Buffer[] = []
    let size = 0
    for await (const c of req) {
      size += (c as Buffer).length
      if (size > this.opts.maxBody) return err(413, 'E_TOO_LARGE', `request body over ${this.opts.maxBody} bytes`)
      chunks.push(c as Buffer)
    }
    const apiReq: ApiRequest = {body: Buffer.concat(chunks), headers: req.headers, method, params: match.params, path: url.pathname, query: url.searchParams}
    try {
      this.reply(res, await match.c.route.handler(apiReq, ctx))
    } catch (error) {
      if (isMqError(error)) {
        const status = error.code === 'E_NOT_FOUND' ? 404 : error.exit === 77 ? 403 : error.exit === 2 || error.exit === 65 ? 400 : error.exit === 75 || error.exit === 69 ? 503 : 409
        return err(status, error.code, error.message, error.hint)
      }
      throw error
    }
  }
}
