import {createHash} from 'node:crypto'
import type {IncomingMessage, ServerResponse} from 'node:http'
import {type Server, createServer} from 'node:https'
import type {AddressInfo} from 'node:net'
import type {SecureContextOptions, TLSSocket} from 'node:tls'

import type {Redis} from 'ioredis'
import {Counter, Histogram, Registry} from 'prom-client'

import {type HealthComponent, type HealthStatus, healthHttpStatus, worst} from '../health/index.js'
import type {MqConfig} from '../config/schema.js'
import {MqError} from '../errors.js'
import type {ApiClient} from '../http/client.js'
import {HttpError, readBody, sendError, sendJson, statusOf} from '../http/errors.js'
import {type Logger, silentLogger} from '../log.js'
import {guardHandshakes, handshakeLimits} from '../net/pending.js'
import {peerIdentity} from '../pki/index.js'
import {NOT_ACCEPTED} from '../records/not-accepted.js'
import {type PipelineKeys, pipelineKeys} from '../worker/keys.js'
import {RegisterBatcher} from './batcher.js'
import {EnqueueBatcher} from './enqueue.js'
import {RateLimiter} from './rate-limit.js'
import {validateIngest} from './validate.js'
import {timeOrderedUuid} from '../wire/ids.js'

export interface ProxyOptions {
  config: MqConfig
  /** server TLS: key, cert, ca and crl; requestCert/rejectUnauthorized are forced on */
  tls: SecureContextOptions
  /** the broker's internal API as the proxy identity */
  broker: ApiClient
  redis: Redis
  logger?: Logger
  /** serials revoked by the current CRL, for connections opened before a CRL update */
  revoked?: () => Set<string>
  /** the proxy's own certificates (server and client), for /api/v1/health: revoked or expired is failing */
  certificates?: () => HealthComponent
  /** longest wait for the broker to record a message before answering 503 (default 900 ms) */
  registerDeadlineMs?: number
}

export interface Accepted {
  message_id: string
  status: 'queued'
  client_id: string
  queued_at: string
  position: number
}

const IDEM_TTL_S = 24 * 3600

/**
 * `mq proxy start`: the mutual-TLS ingest endpoint. A request is validated, rate limited per
 * identity, registered with the broker (which seals it in the records store) and then enqueued in
 * the Redis stream by reference only. Any failure answers an error and leaves nothing enqueued.
 */
export class ProxyServer {
  readonly server: Server
  private readonly keys: PipelineKeys
  private readonly limiter: RateLimiter
  private readonly batcher: RegisterBatcher
  private readonly enqueuer: EnqueueBatcher
  private readonly log: Logger
  readonly registry = new Registry()
  private readonly m
  /** requests and accepted messages counted since the last scrape, by "route status" and by client */
  private readonly requestCounts = new Map<string, number>()
  private readonly acceptedCounts = new Map<string, number>()

  constructor(private readonly o: ProxyOptions) {
    this.log = (o.logger ?? silentLogger).child('proxy')
    this.keys = pipelineKeys(o.config)
    this.limiter = new RateLimiter(o.redis, o.config.proxy.rate_per_sec, o.config.proxy.rate_burst)
    // the promise: 503 within one second when the broker does not answer
    this.batcher = new RegisterBatcher(o.broker, 500, 4, o.registerDeadlineMs ?? 900, (error, ids) =>
      // left queued: the worker's reconciler may deliver messages whose requests were answered 503
      this.log.warn('could not report refused registrations to the broker', {count: ids.length, error}),
    )
    this.enqueuer = new EnqueueBatcher(o.redis, this.keys.stream)
    // Per-request counts go to plain maps and reach prom-client at scrape time (collect): a
    // labelled inc() hashes its label object on every request, on the ingest hot path.
    const requests = this.requestCounts
    const accepted = this.acceptedCounts
    this.m = {
      accepted: new Counter({
        collect(this: Counter<'client_id'>) {
          for (const [client_id, n] of accepted) this.inc({client_id}, n)
          accepted.clear()
        },
        help: 'Messages accepted (202), by client', labelNames: ['client_id'], name: 'mq_proxy_messages_accepted_total', registers: [this.registry],
      }),
      requests: new Counter({
        collect(this: Counter<'route' | 'status'>) {
          for (const [key, n] of requests) {
            const i = key.lastIndexOf(' ')
            this.inc({route: key.slice(0, i), status: key.slice(i + 1)}, n)
          }
          requests.clear()
        },
        help: 'HTTP requests by route and status', labelNames: ['route', 'status'], name: 'mq_proxy_requests_total', registers: [this.registry],
      }),
      seconds: new Histogram({buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], help: 'Ingest request latency', name: 'mq_proxy_request_seconds', registers: [this.registry]}),
    }
    this.server = createServer({...o.tls, minVersion: 'TLSv1.2', rejectUnauthorized: true, requestCert: true}, (req, res) => {
      void this.handle(req, res)
    })
    // the identity is read once per connection (peerIdentity): a renegotiation must not change it
    this.server.on('secureConnection', (s: TLSSocket) => s.disableRenegotiation())
    this.server.keepAliveTimeout = 65_000
    this.server.headersTimeout = 20_000
    this.server.requestTimeout = 30_000
    this.server.on('tlsClientError', (e) => this.log.debug('TLS handshake refused', {error: e}))
    this.server.on('clientError', (_e, sock) => sock.destroy())
    // a hard handshake deadline from accept and caps on sockets still in the handshake
    guardHandshakes(this.server, handshakeLimits(o.config.proxy), this.log, 'proxy')
  }


  /** Swaps in a new CRL (or certificate) for new handshakes. */
  updateTls(tls: SecureContextOptions): void {
    this.server.setSecureContext({...this.o.tls, ...tls})
  }

  listen(port = this.o.config.proxy.port, host = this.o.config.proxy.host): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, host, () => {
        this.server.off('error', reject)
        resolve(this.server.address() as AddressInfo)
      })
    })
  }

  /** Stops listening and drops connections; also closes the broker client (it owns its sockets). */
  async close(): Promise<void> {
    await new Promise<void>((r) => {
      this.server.close(() => r())
      this.server.closeAllConnections()
    })
    this.o.broker.close()
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]
    const route = `${req.method} ${path === '/api/v1/messages' || path === '/api/v1/health' || path === '/metrics' ? path : 'other'}`
    const end = this.m.seconds.startTimer()
    try {
      const who = peerIdentity(req.socket as TLSSocket)
      if (!who) throw new HttpError(401, 'E_NO_IDENTITY', 'A verified client certificate is required.', {hint: 'Try this: curl --cert client.crt --key client.key --cacert ca.crt ...'})
      if (this.o.revoked?.().has(who.serial)) {
        res.setHeader('connection', 'close')
        throw new HttpError(403, 'E_CERT_REVOKED', `The certificate of ${who.cn} is revoked.`)
      }
      if (path === '/api/v1/messages') {
        if (req.method !== 'POST') throw new HttpError(405, 'E_METHOD', `${req.method} is not allowed here; use POST.`, {headers: {allow: 'POST'}})
        const r = await this.accept(req, who)
        sendJson(res, 202, r)
      } else if (path === '/api/v1/health' && req.method === 'GET') {
        const h = await this.health()
        sendJson(res, healthHttpStatus(h.status), h)
      } else if (path === '/metrics' && req.method === 'GET') {
        res.writeHead(200, {'content-type': this.registry.contentType})
        res.end(await this.registry.metrics())
      } else {
        throw new HttpError(404, 'E_NOT_FOUND', `No route ${req.method} ${path}.`, {hint: 'Try this: POST /api/v1/messages'})
      }
    } catch (error) {
      if (statusOf(error) >= 500) this.log.warn('request failed', {error, path})
      sendError(res, error)
    } finally {
      end()
      const key = `${route} ${res.statusCode}`
      this.requestCounts.set(key, (this.requestCounts.get(key) ?? 0) + 1)
    }
  }

  private async accept(req: IncomingMessage, who: {cn: string; serial: string}): Promise<Accepted> {
    const cfg = this.o.config.proxy
    const ctype = req.headers['content-type']
    if (!/^application\/json\s*(;|$)/i.test(ctype ?? '')) {
      req.resume()
      throw new HttpError(415, 'E_CONTENT_TYPE', `Content-Type must be application/json, not ${JSON.stringify(ctype ?? '')}.`, {hint: "Try this: add -H 'Content-Type: application/json'."})
    }
    const {idem, metadata, sender, text} = validateIngest(await readBody(req, cfg.max_request_bytes), ctype, req.headers['idempotency-key'], cfg.max_body_chars)

    const redis = this.o.redis
    const rate = await this.redisCall(() => this.limiter.take(this.keys.rate(who.cn)))
    if (!rate.allowed) {
      const secs = Math.max(1, Math.ceil(rate.retryAfterMs / 1000))
      throw new HttpError(429, 'E_RATE_LIMITED', `${who.cn} sent more than ${cfg.rate_per_sec} messages/s (burst ${cfg.rate_burst}).`, {extra: {retry_after_ms: rate.retryAfterMs}, headers: {'retry-after': String(secs)}, hint: `Try this: retry after ${secs} s.`})
    }
    let messageId: string = timeOrderedUuid()
    if (idem !== undefined) {
      const seen = await this.redisCall(() => redis.get(this.keys.idem(who.cn, idem)))
      if (seen) return JSON.parse(seen) as Accepted
      // the same key always names the same message, so concurrent retries converge on one record
      messageId = uuidFrom(createHash('sha256').update(`${who.cn}\0${idem}`).digest())
    }

    let reg: {queued_at: string; created: boolean}
    try {
      reg = await this.batcher.register({client_id: who.cn, client_serial: who.serial, message_body: text, message_id: messageId, metadata: metadata ?? undefined, sender_number: sender})
    } catch (error) {
      throw brokerFailure(error)
    }
    let position: number
    try {
      position = await this.redisCall(() => this.enqueuer.enqueue(messageId, who.cn))
    } catch (error) {
      // Answered 503, so not accepted: the record this request wrote ends failed, never delivered (the
      // worker's reconciler skips failed records). A retry with the same Idempotency-Key revives it.
      // (Two concurrent requests with one key, one enqueued and one not, could fail an accepted message;
      // clients retry after an answer, not alongside the first request.)
      if (reg.created) {
        this.o.broker.call('PUT', `/internal/messages/${messageId}/status`, {error: `${NOT_ACCEPTED}: never enqueued (Redis unavailable); the client was answered 503`, status: 'failed'}).catch(() => {})
      }
      throw error
    }
    const accepted: Accepted = {client_id: who.cn, message_id: messageId, position: Number(position), queued_at: reg.queued_at, status: 'queued'}
    if (idem !== undefined) await redis.set(this.keys.idem(who.cn, idem), JSON.stringify(accepted), 'EX', IDEM_TTL_S).catch(() => {})
    this.acceptedCounts.set(who.cn, (this.acceptedCounts.get(who.cn) ?? 0) + 1)
    return accepted
  }

  private async redisCall<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (error) {
      throw new HttpError(503, 'E_REDIS_UNAVAILABLE', `The queue (Redis) is unavailable: ${(error as Error).message}`, {headers: {'retry-after': '1'}, hint: 'Try this: retry in a moment; nothing was enqueued.'})
    }
  }

  /**
   * The proxy's own health: it accepts messages only while Redis and the broker both answer, so
   * either being unreachable is "failing" (503); a broker that reports itself degraded makes the
   * proxy "degraded" (200). Same vocabulary as the broker's GET /health.
   */
  async health(): Promise<HealthReportLite> {
    const redisCheck = async (): Promise<HealthComponent> => {
      const t = Date.now()
      try {
        await this.o.redis.ping()
        return {latency_ms: Date.now() - t, reachable: true, status: 'ok'}
      } catch (error) {
        return {error: (error as Error).message, hint: 'Try this: start Redis or fix redis.url (MQ_REDIS_URL).', reachable: false, status: 'failing'}
      }
    }
    const brokerCheck = async (): Promise<HealthComponent> => {
      const t = Date.now()
      try {
        const r = await this.o.broker.request<{status?: string}>('GET', '/health')
        const reported = typeof r.body?.status === 'string' ? r.body.status : undefined
        const status: HealthStatus = r.status !== 200 || reported === 'failing' ? 'failing' : reported === 'degraded' ? 'degraded' : 'ok'
        return {
          broker_status: reported ?? null, http: r.status, latency_ms: Date.now() - t, reachable: true, status,
          ...(status === 'ok' ? {} : {hint: "Try this: mq broker health (shows which of the broker's components is not ok)."}),
        }
      } catch (error) {
        return {error: (error as Error).message, hint: 'Try this: start the broker (mq broker start) or fix proxy.broker_api.', reachable: false, status: 'failing'}
      }
    }
    const [redis, broker] = await Promise.all([redisCheck(), brokerCheck()])
    const certificate = this.o.certificates?.()
    const components: Record<string, HealthComponent> = {broker, redis, ...(certificate ? {certificate} : {})}
    return {components, status: worst([redis.status, broker.status, certificate?.status ?? 'ok']), timestamp: new Date().toISOString()}
  }
}

export interface HealthReportLite {
  status: HealthStatus
  timestamp: string
  components: Record<string, HealthComponent>
}

function uuidFrom(h: Buffer): string {
  const b = Buffer.from(h.subarray(0, 16))
  b[6] = (b[6] & 0x0f) | 0x50 // name-based (v5-style) UUID from SHA-256
  b[8] = (b[8] & 0x3f) | 0x80
  const x = b.toString('hex')
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`
}

/** Broker answers keep their 4xx meaning; anything else is "try again" (503). */
function brokerFailure(error: unknown): HttpError {
  const status = error instanceof MqError && typeof error.details?.status === 'number' ? error.details.status : 503
  const e = error as MqError
  if (status >= 400 && status < 500 && status !== 429 && status !== 401 && status !== 403) return new HttpError(status, e.code, e.message, {hint: e.hint})
  return new HttpError(503, 'E_BROKER_UNAVAILABLE', `The broker could not record the message: ${e.message}`, {headers: {'retry-after': '1'}, hint: 'Try this: retry in a moment; nothing was enqueued.'})
}
