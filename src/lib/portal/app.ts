import Fastify, {type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions} from 'fastify'
import type {SecureContextOptions} from 'node:tls'

import type {MqConfig} from '../config/schema.js'
import {HttpError, errorBody, statusOf} from '../http/errors.js'
import {type Logger, silentLogger} from '../log.js'
import type {RecordsStore} from '../records/store.js'
import type {PortalCa} from './ca.js'
import {PortalMetrics} from './metrics.js'
import auditRoutes from './routes/audit.js'
import authRoutes from './routes/auth.js'
import certificateRoutes from './routes/certificates.js'
import messageRoutes from './routes/messages.js'
import statsRoutes from './routes/stats.js'
import uiRoutes from './routes/ui.js'
import userRoutes from './routes/users.js'
import type {PortalUser, TokenService} from './tokens.js'

declare module 'fastify' {
  interface FastifyRequest {
    portalUser?: PortalUser
  }
}

/** What the broker's API answers for the live overview (GET /api/stats). */
export interface BrokerStatsSource {
  stats(): Promise<unknown>
}

export interface PortalDeps {
  config: MqConfig
  store: RecordsStore
  tokens: TokenService
  ca: PortalCa
  broker?: BrokerStatsSource
  logger?: Logger
  metrics?: PortalMetrics
}

/** Content-Security-Policy of every answer: our own scripts and styles only, no inline code, no framing. */
export const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': CSP,
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'referrer-policy': 'no-referrer',
  'strict-transport-security': 'max-age=31536000',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
}

/** Fastify's own 4xx errors (bad JSON, body too large, schema) in our {"error": {code, message}} shape. */
function toHttpError(err: FastifyError): HttpError | undefined {
  if (err.validation) return new HttpError(422, 'E_VALIDATION', `Invalid request: ${err.message}`)
  if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || err instanceof SyntaxError) return new HttpError(400, 'E_BAD_JSON', 'The request body is not valid JSON.')
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new HttpError(413, 'E_TOO_LARGE', 'The request body is too large.')
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new HttpError(415, 'E_CONTENT_TYPE', 'Content-Type must be application/json.')
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) return new HttpError(err.statusCode, 'E_BAD_REQUEST', err.message)
  return undefined
}

/**
 * The portal's HTTP application: the web UI at /, the portal API (/portal/*, JWT) and the admin
 * API (/admin/*, JWT with role admin), each resource a small route plugin with JSON schemas.
 * Holds no state of its own: sessions and rate-limit counts live in the records store.
 */
export async function buildPortalApp(deps: PortalDeps, server: {https?: SecureContextOptions} = {}): Promise<FastifyInstance> {
  const log = (deps.logger ?? silentLogger).child('portal')
  const opts: FastifyServerOptions = {
    ajv: {customOptions: {allErrors: false, coerceTypes: 'array', removeAdditional: false}},
    bodyLimit: 64 * 1024,
    logger: false,
    return503OnClosing: true,
    trustProxy: deps.config.portal.trust_proxy,
  }
  // one instance type for both: the routes never touch the raw server
  const app = Fastify(server.https ? ({...opts, https: server.https} as FastifyServerOptions) : opts) as unknown as FastifyInstance
  const metrics = deps.metrics ?? new PortalMetrics()

  app.addHook('onRequest', async (req, reply) => {
    reply.headers(SECURITY_HEADERS)
    ;(req as FastifyRequest & {startedAt?: bigint}).startedAt = process.hrtime.bigint()
  })
  app.addHook('onResponse', async (req, reply) => {
    const started = (req as FastifyRequest & {startedAt?: bigint}).startedAt
    const route = req.routeOptions.url ?? 'other'
    metrics.observe(req.method, route, reply.statusCode, started === undefined ? 0 : Number(process.hrtime.bigint() - started) / 1e9)
  })

  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    const e = toHttpError(err) ?? err
    const status = statusOf(e)
    if (status >= 500) log.warn('portal request failed', {error: err, path: req.url})
    const headers = e instanceof HttpError && e.headers ? e.headers : {}
    return reply.code(status).headers({'cache-control': 'no-store', ...headers}).send(errorBody(e))
  })
  app.setNotFoundHandler((req, reply) => reply.code(404).send(errorBody(new HttpError(404, 'E_NOT_FOUND', `No route ${req.method} ${req.url.split('?')[0]}.`))))

  await app.register(uiRoutes)
  await app.register(authRoutes, deps)
  await app.register(messageRoutes, deps)
  await app.register(certificateRoutes, deps)
  await app.register(userRoutes, deps)
  await app.register(auditRoutes, deps)
  await app.register(statsRoutes, {...deps, metrics})
  return app
}
