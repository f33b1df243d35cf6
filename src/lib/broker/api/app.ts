/**
 * The broker's HTTPS API as a fastify application: who is calling (the verified client
 * certificate of the connection, roles from broker.permissions), the one JSON error shape, the
 * request counter, and the route modules (the broker's own and its plugins'), each in its own
 * encapsulated context. The HTTPS server itself (handshake deadline, caps on sockets still in
 * the handshake) is ours and is handed to fastify through serverFactory.
 */
import type {IncomingMessage} from 'node:http'
import type {Duplex} from 'node:stream'
import type {TLSSocket} from 'node:tls'

import Fastify, {type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerFactory} from 'fastify'

import {errorText, isMqError} from '../../errors.js'
import {HttpError} from '../../http/errors.js'
import {API_AJV_OPTIONS, requestError} from '../../http/schema.js'
import type {Logger} from '../../log.js'
import {peerIdentity} from '../../pki/index.js'
import type {ApiContext, ApiRoutes} from '../api-types.js'
import {type ResolvedPermissions, monitorForbidden} from '../permissions.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** a path that exists, with another method: answered 405 before any identity check */
    methodNotAllowed?: boolean
  }
}

export interface PeerCert {
  cn: string
  serial: string
}

export interface ApiAppOptions {
  permissionsFor: (identity: string) => ResolvedPermissions
  isRevoked?: (serial: string) => boolean
  /** request bodies larger than this are refused with 413 */
  maxBody: number
  logger: Logger
  /** route modules, in order: the broker's own, then its plugins' */
  routes: ApiRoutes[]
  /** our HTTPS server (see ApiServer); absent for inject()-only apps in tests */
  serverFactory?: FastifyServerFactory
  /** the verified client certificate of a request's connection (default: its TLS socket's) */
  peer?: (req: IncomingMessage) => PeerCert | null
  /** every answer, by route pattern ("other" when no route matched) */
  onAnswer?: (route: string, method: string, status: number) => void
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const
const KNOWN_METHODS = new Set<string>(METHODS)

export const errorJson = (code: string, message: string, hint?: string) => ({error: {code, message, ...(hint ? {hint} : {})}})

const pathOf = (req: FastifyRequest) => {
  const q = req.url.indexOf('?')
  return q < 0 ? req.url : req.url.slice(0, q)
}

/** The status of an error thrown by one of the broker's own routes (plugins map their own errors). */
function statusOfBuiltin(err: {code: string; exit: number}): number {
  if (err.code === 'E_NOT_FOUND') return 404
  if (err.exit === 77) return 403
  if (err.exit === 2 || err.exit === 65) return 400
  if (err.exit === 75 || err.exit === 69) return 503
  return 409
}

/**
 * Reads a request body as a Buffer, refusing more than `limit` bytes with 413 as soon as that is
 * known (Content-Length or counting) without buffering the rest. Routes parse what they need.
 */
function bodyReader(limit: number) {
  const tooLarge = () => new HttpError(413, 'E_TOO_LARGE', `request body over ${limit} bytes`)
  return (_req: FastifyRequest, payload: IncomingMessage, done: (err: Error | null, body?: Buffer) => void) => {
    const declared = Number(payload.headers['content-length'])
    if (declared > limit) {
      payload.resume()
      return done(tooLarge())
    }
    const chunks: Buffer[] = []
    let size = 0
    let finished = false
    const finish = (err: Error | null, body?: Buffer) => {
      if (finished) return
      finished = true
      done(err, body)
    }
    payload.on('data', (c: Buffer) => {
      if (finished) return
      size += c.length
      if (size > limit) {
        payload.resume()
        return finish(tooLarge())
      }
      chunks.push(c)
    })
    payload.on('end', () => finish(null, chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)))
    payload.on('error', (e) => finish(e))
  }
}

/**
 * Requests that never became requests (unparsable HTTP, headers too large, too slow): answered in
 * our error shape, then the socket is closed, as Node itself would (fastify's own answer has another shape).
 */
function clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const [status, text, code, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'Request Timeout', 'E_TIMEOUT', 'the request did not arrive in time']
    : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request Header Fields Too Large', 'E_HEADERS_TOO_LARGE', 'the request headers are too large']
    : [400, 'Bad Request', 'E_BAD_REQUEST', 'the request is not valid HTTP']
  const body = JSON.stringify(errorJson(code, message))
  if (socket.writable) socket.write(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json\r\n\r\n${body}`)
  socket.destroy()
}

export function buildApiApp(opts: ApiAppOptions): FastifyInstance {
  const peerOf = opts.peer ?? ((req: IncomingMessage) => peerIdentity(req.socket as TLSSocket))
  const app = Fastify({
    ajv: {customOptions: API_AJV_OPTIONS},
    clientErrorHandler: clientError,
    exposeHeadRoutes: false,
    logger: false,
    // route params are names and message ids; their own schemas bound them
    routerOptions: {ignoreTrailingSlash: true, maxParamLength: 1024},
    ...(opts.serverFactory ? {serverFactory: opts.serverFactory} : {}),
  }) as unknown as FastifyInstance

  app.decorateRequest('caller', null as unknown as ApiContext)
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', bodyReader(opts.maxBody))

  // Identity and rights before the body is read: a caller without them never gets to upload one.
  app.addHook('onRequest', (req, reply, done) => {
    const cfg = req.routeOptions.config
    const remote = req.raw.socket.remoteAddress ?? ''
    if (req.is404 || cfg.methodNotAllowed) {
      req.caller = {identity: null, remote, roles: []}
      return done()
    }
    const peer = peerOf(req.raw)
    if (peer && opts.isRevoked?.(peer.serial)) return void reply.code(401).send(errorJson('E_CERT_REVOKED', `certificate serial ${peer.serial} is revoked`))
    const roles = peer ? opts.permissionsFor(peer.cn).roles : []
    req.caller = {identity: peer?.cn ?? null, remote, roles}
    if (cfg.anonymous) return done()
    if (!peer) return void reply.code(401).send(errorJson('E_TLS_CLIENT_CERT', "this route needs a client certificate from the broker's CA", 'Try this: curl --cert pki/issued/admin.crt --key pki/issued/admin.key --cacert pki/ca.crt ...'))
    const need = cfg.roles ?? []
    if (need.length > 0 && !need.some((r) => roles.includes(r))) {
      if (need.length === 1 && need[0] === 'monitor') {
        const e = monitorForbidden(peer.cn, `${req.method} ${pathOf(req)}`)
        return void reply.code(403).send(errorJson(e.code, e.message, e.hint))
      }
      return void reply.code(403).send(errorJson('E_FORBIDDEN', `${peer.cn} lacks a role among ${need.join(', ')}`, 'Try this: grant the role in broker.permissions'))
    }
    done()
  })

  if (opts.onAnswer) {
    const onAnswer = opts.onAnswer
    // labels stay bounded whatever a client sends: unknown paths are "other", odd methods too
    app.addHook('onResponse', (req, reply, done) => {
      // a route's config carries its pattern (routeOptions would build a whole object per call)
      const cfg = req.is404 ? undefined : (req.routeOptions.config as {url?: string; methodNotAllowed?: boolean})
      const route = !cfg || cfg.methodNotAllowed ? 'other' : (cfg.url ?? 'other')
      onAnswer(route, KNOWN_METHODS.has(req.method) ? req.method : 'other', reply.statusCode)
      done()
    })
  }

  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    const e = requestError(err) ?? err
    if (e instanceof HttpError) return reply.code(e.status).send(errorJson(e.code, e.message, e.hint))
    if (isMqError(e)) return reply.code(statusOfBuiltin(e)).send(errorJson(e.code, e.message, e.hint))
    opts.logger.error('API handler failed', {error: errorText(err), path: pathOf(req)})
    return reply.code(500).send(errorJson('E_INTERNAL', 'internal error'))
  })
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send(errorJson('E_NOT_FOUND', `no route ${req.method} ${pathOf(req)}`, 'Try this: GET /health, /metrics, /api/stats, /api/queues'))
  })

  // which methods each path has, so that the others answer 405 rather than 404
  const methods = new Map<string, Set<string>>()
  app.addHook('onRoute', (r) => {
    if (r.config?.methodNotAllowed) return
    const set = methods.get(r.url) ?? new Set<string>()
    for (const m of [r.method].flat()) set.add(m)
    methods.set(r.url, set)
  })
  for (const routes of opts.routes) app.register(routes)
  app.register(async (scope) => {
    for (const [url, has] of methods) {
      const others = METHODS.filter((m) => !has.has(m))
      if (others.length === 0) continue
      scope.route({
        config: {methodNotAllowed: true},
        handler: (req, reply) => void reply.code(405).send(errorJson('E_METHOD', `${req.method} is not allowed on ${pathOf(req)}`)),
        method: others,
        url,
      })
    }
  })
  return app
}
