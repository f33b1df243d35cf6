/**
 * The plugin boundary of the broker's HTTPS API: the broker owns the server (fastify on our own
 * HTTPS server), mutual TLS, identity and roles; areas such as the records store register their
 * route modules here without importing the broker's internals.
 */
import type {FastifyInstance} from 'fastify'

import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import type {HealthComponent} from '../health/index.js'
import type {Logger} from '../log.js'

/** Who is calling, as the broker established it before any route runs (request.caller). */
export interface ApiContext {
  /** CN of the verified client certificate; null on routes that allow anonymous access (e.g. /health) */
  identity: string | null
  /** roles granted to the identity by broker.permissions ("admin", "proxy", "worker", "monitor") */
  roles: string[]
  /** remote address, for audit logs */
  remote: string
}

declare module 'fastify' {
  interface FastifyRequest {
    /** set by the broker's API before the route's hooks and handler run */
    caller: ApiContext
  }
  interface FastifyContextConfig {
    /** the caller needs at least one of these roles; empty or absent = any authenticated client */
    roles?: string[]
    /** no client certificate needed (GET /health) */
    anonymous?: boolean
  }
}

/**
 * A route module: a fastify plugin that registers routes with `config.roles` (and JSON schemas).
 * It runs in its own encapsulated context, so it may set its own error handler and hooks.
 */
export type ApiRoutes = (app: FastifyInstance) => Promise<void>

/** What the broker offers to plugins in-process. */
export interface BrokerPublisher {
  /**
   * Routes a message through an exchange, resolving once it is stored (durably, for durable
   * queues). Rejects with an MqError (E_UNROUTABLE, E_NOT_FOUND, ...) when it cannot be routed.
   */
  publish(exchange: string, routingKey: string, body: Buffer, opts?: {messageId?: string; headers?: Record<string, string>; dedupe?: boolean}): Promise<{messageId: string; queues: string[]; duplicate?: boolean}>
  /**
   * With `dedupe: true` (and a messageId) the broker remembers the id, durably with the message, and
   * answers a repeat as `duplicate` without storing it again, until the publisher calls settle(id)
   * (it has recorded the delivery itself) or the id leaves the window (broker.dedupe_window_ms / dedupe_max).
   */
  settle?(messageId: string): void
  /** The broker's latest status of a message id (as `mq message status` shows it); null when it is not known. */
  status?(messageId: string): {status: string; queue?: string} | null
}

export interface ApiPlugin {
  name: string
  /** registered on the API's fastify instance; request bodies arrive as a Buffer (at most broker.max_payload bytes) */
  routes: ApiRoutes
  /** merged into GET /health under components[name] (ok false counts as "failing") */
  health?(): Promise<{ok: boolean; [k: string]: unknown}>
  /** merged into GET /health as top-level components (e.g. the records plugin's "store", "redis") */
  components?(): Promise<Record<string, HealthComponent>>
  /** extra Prometheus text appended to GET /metrics */
  metrics?(): Promise<string>
  close?(): Promise<void>
}

/** What a plugin factory gets from the broker that mounts it. */
export interface ApiPluginContext {
  config: MqConfig
  home: MqHome
  publisher: BrokerPublisher
  logger: Logger
}

/**
 * Builds one plugin of the broker's HTTPS API. The broker knows no plugin by name: whoever starts
 * it (src/lib/app) passes the factories, so the broker core stays free of the areas that plug in.
 */
export type ApiPluginFactory = (ctx: ApiPluginContext) => Promise<ApiPlugin>
