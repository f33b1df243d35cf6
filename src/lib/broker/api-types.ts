/**
 * The plugin boundary of the broker's HTTPS API (fastify-style): the broker owns the server,
 * mutual TLS, identity and roles; areas such as the records store mount their routes here
 * without importing the broker's internals.
 */
import type {IncomingHttpHeaders} from 'node:http'

import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import type {HealthComponent} from '../health/index.js'
import type {Logger} from '../log.js'

export interface ApiContext {
  /** CN of the verified client certificate; null on routes that allow anonymous access (e.g. /health) */
  identity: string | null
  /** roles granted to the identity by broker.permissions ("admin", "proxy", "worker") */
  roles: string[]
  /** remote address, for audit logs */
  remote: string
}

export interface ApiRequest {
  method: string
  /** path without query string */
  path: string
  /** values of the route's :params */
  params: Record<string, string>
  query: URLSearchParams
  headers: IncomingHttpHeaders
  body: Buffer
}

export interface ApiResponse {
  status: number
  /** serialised as JSON unless it is a string or Buffer */
  body?: unknown
  headers?: Record<string, string>
}

export type ApiHandler = (req: ApiRequest, ctx: ApiContext) => Promise<ApiResponse>

export interface ApiRoute {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE'
  /** e.g. "/internal/messages/:id/status" */
  path: string
  /** the caller needs at least one of these roles; empty or absent = any authenticated client */
  roles?: string[]
  handler: ApiHandler
}

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
  routes: ApiRoute[]
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
