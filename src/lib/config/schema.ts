import {z} from 'zod'

import {parseDuration} from '../util/duration.js'

/**
 * The one configuration schema for every part of mq. Keys are snake_case; each leaf can be
 * overridden from the environment as MQ_<PATH_JOINED_BY_UNDERSCORE> (see env.ts), e.g.
 * broker.api_port <- MQ_BROKER_API_PORT.
 */
const port = z.number().int().min(1).max(65535)
const host = z.string().min(1)
const ms = z.number().int().min(0)
/** A duration with its unit ("500ms", "30s", "5m", "1h"), as the CLI's duration flags take it; "off" where allowed. */
const duration = (opts: {off?: boolean} = {}) =>
  z.string().refine(
    (v) => {
      if (opts.off && v === 'off') return true
      try {
        parseDuration(v)
        return true
      } catch {
        return false
      }
    },
    {message: `a duration with a unit: 500ms, 30s, 5m or 1h${opts.off ? ', or off' : ''}`},
  )
/** Every TLS listener: a hard handshake deadline from accept, and caps on sockets still in the handshake (src/lib/net/pending.ts). */
const handshakeKeys = (timeoutMs: number) => ({
  handshake_timeout_ms: ms.default(timeoutMs),
  max_handshakes: z.number().int().min(1).default(256),
  max_handshakes_per_source: z.number().int().min(1).default(64),
})

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const
/** text for people (the default), json for log shippers: one object per line */
export const LOG_FORMATS = ['text', 'json'] as const

/**
 * One broker.permissions rule. publish absent = every exchange (except for the CipherMQ identity);
 * consume absent = only the identity's own queues (IDENTITY and IDENTITY.*); monitor = list queues,
 * statuses, stats and /metrics; admin = everything (monitor included).
 */
export const permissionRule = z
  .object({
    identity: z.string().min(1),
    publish: z.array(z.string()).optional(),
    consume: z.array(z.string()).optional(),
    admin: z.boolean().default(false),
    monitor: z.boolean().default(false),
    roles: z.array(z.enum(['proxy', 'worker', 'admin', 'monitor'])).default([]),
  })
  .strict()

export const configSchema = z
  .object({
    log_level: z.enum(LOG_LEVELS).default('info'),
    log_format: z.enum(LOG_FORMATS).default('text'),
    client: z
      .object({
        // unset: the servers of this same home (broker.host:broker.port, https://broker.api_host:broker.api_port),
        // so moving a home to other ports is one key per port
        broker: z.string().optional(),
        api: z.string().optional(),
        identity: z.string().default('admin'),
        timeout_ms: ms.default(10_000),
        relay: z.string().optional(),
      })
      .strict()
      .default({}),
    pki: z
      .object({
        ca_cn: z.string().default('mq development CA'),
        ca_days: z.number().int().min(1).default(3650),
        cert_days: z.number().int().min(1).default(397),
        crl_days: z.number().int().min(1).default(7),
        ca_key_bits: z.number().int().min(3072).default(3072),
        key_bits: z.number().int().min(2048).default(2048),
      })
      .strict()
      .default({}),
    broker: z
      .object({
        host: host.default('127.0.0.1'),
        port: port.default(5700),
        api_host: host.default('127.0.0.1'),
        api_port: port.default(5701),
        identity: z.string().default('broker'),
        max_payload: z.number().int().min(1024).max(128 * 1024 * 1024).default(16 * 1024 * 1024),
        heartbeat_ms: ms.default(30_000),
        // native port and HTTPS API port; the native port also wants HELLO within handshake_timeout_ms
        ...handshakeKeys(10_000),
        max_unconfirmed: z.number().int().min(1).default(10_000),
        // native connections (mutual TLS) beyond this are refused with E_TOO_MANY_CONNECTIONS: bounds memory per broker
        max_connections: z.number().int().min(1).default(1024),
        max_unacked: z.number().int().min(1).default(10_000),
        delivery_limit: z.number().int().min(1).default(20),
        // deduplicated publishes (the pipeline's deliveries): ids remembered until the publisher has
        // recorded them, at most this long and this many (oldest first); see docs/pipeline.md
        dedupe_window_ms: z.number().int().min(1000).default(24 * 3600 * 1000),
        dedupe_max: z.number().int().min(1).default(100_000),
        flow_high: z.number().int().min(2).default(5_000),
        // paging: a durable queue keeps at most this many messages / body bytes in memory, the rest on disk
        queue_window_messages: z.number().int().min(1).default(2_500),
        queue_window_bytes: z.number().int().min(1024).default(16 * 1024 * 1024),
        // non-durable queues: a hard limit of ready body bytes, and what a full queue does
        transient_queue_max_bytes: z.number().int().min(1024).default(64 * 1024 * 1024),
        transient_overflow: z.enum(['reject-publish', 'drop-head']).default('reject-publish'),
        // a fraction (0 < x <= 1) of the machine's (or cgroup's) memory, or bytes (> 1): above it publishers are paused
        memory_high_watermark: z.number().positive().default(0.4),
        // old generation growth past the live heap at each full GC, percent (0 = V8's default): less RSS, more GCs
        heap_growing_percent: z.number().int().min(0).max(1000).default(25),
        // the cap above applies only while the broker's RSS is above this many bytes (0 = always)
        heap_growing_above: z.number().int().min(0).default(160 * 1024 * 1024),
        default_prefetch: z.number().int().min(1).default(100),
        // extra wait before a group commit when the store is idle; under load the next group forms while one commits
        commit_interval_ms: ms.default(0),
        crl_check_interval_ms: ms.default(2_000),
        // cluster mode (docs/cluster.md): queues and definitions live in Redis, shared by every node of the cluster
        cluster: z
          .object({
            // empty = standalone (SQLite); redis://, rediss://, redis-cluster://h:p,h:p, redis-sentinel://h:p,h:p/master
            url: z.string().default(''),
            name: z.string().default('default'),
            // fsync: a confirm needs Redis's AOF on disk (checked at start, warned when Redis cannot promise it); write: in Redis's memory
            durability: z.enum(['fsync', 'write']).default('fsync'),
            // a node silent this long is dead: its unacked messages are redelivered by the others
            claim_ms: z.number().int().min(200).default(5_000),
          })
          .strict()
          .default({}),
        // plain-HTTP /metrics on 127.0.0.1 for Prometheus (monitoring/prometheus.yml uses 9101); 0 = off
        metrics_port: z.number().int().min(0).max(65535).default(0),
        // resident memory the broker should stay under: exported as mq_broker_memory_watermark_bytes for the alert
        memory_watermark_bytes: z.number().int().min(1).default(1024 * 1024 * 1024),
        // graceful stop (SIGTERM): commit and confirm what was taken in, close connections; then force
        stop_timeout_ms: ms.default(10_000),
        ciphermq: z
          .object({
            enabled: z.boolean().default(false),
            host: host.default('127.0.0.1'),
            port: port.default(5702),
            // unauthenticated plain TCP: its own small line limit and connection cap, not max_payload
            max_line: z.number().int().min(1024).max(128 * 1024 * 1024).default(1024 * 1024),
            max_connections: z.number().int().min(1).default(256),
            // a command line, once started, must end within line_timeout_ms; a connection with no
            // consumer that completes no command for idle_timeout_ms is closed (slow-drip defence)
            line_timeout_ms: ms.default(10_000),
            idle_timeout_ms: ms.default(300_000),
            // its clients are unauthenticated: they reach only what these globs name (nothing by default)
            queues: z.array(z.string()).default([]),
            exchanges: z.array(z.string()).default([]),
          })
          .strict()
          .default({}),
        permissions: z
          .array(permissionRule)
          // least privilege: everyone publishes, consumes only its own queues (IDENTITY, IDENTITY.*)
          .default([
            {identity: 'admin', publish: ['*'], consume: ['*'], admin: true, monitor: true, roles: ['admin']},
            {identity: 'proxy*', publish: ['*'], admin: false, monitor: false, roles: ['proxy']},
            {identity: 'worker*', publish: ['*'], admin: false, monitor: false, roles: ['worker']},
            // the operators' portal reads /api/stats for its live overview: monitoring, nothing else
            {identity: 'portal', publish: [], consume: [], admin: false, monitor: true, roles: []},
            {identity: '*', publish: ['*'], admin: false, monitor: false, roles: []},
          ]),
      })
      .strict()
      .default({}),
    store: z
      .object({
        // "sqlite" (embedded, under $MQ_HOME/data) or mysql://user:pass@host:port/db
        url: z.string().default('sqlite'),
      })
      .strict()
      .default({}),
    redis: z
      .object({
        url: z.string().default('redis://127.0.0.1:6379'),
        key_prefix: z.string().default('mq:'),
      })
      .strict()
      .default({}),
    proxy: z
      .object({
        host: host.default('127.0.0.1'),
        port: port.default(8001),
        identity: z.string().default('proxy'),
        // server certificate of the proxy's HTTPS listener (a client cert cannot share a name with it)
        server_identity: z.string().default('proxy-server'),
        // the broker's HTTPS API for register calls; defaults to client.api
        broker_api: z.string().optional(),
        max_body_chars: z.number().int().min(1).default(1000),
        max_request_bytes: z.number().int().min(256).default(64 * 1024),
        rate_per_sec: z.number().min(0).default(100),
        rate_burst: z.number().int().min(1).default(200),
        stream: z.string().default('ingest'),
        // plain-HTTP /metrics on 127.0.0.1 for Prometheus (monitoring/prometheus.yml uses 9102); 0 = off
        metrics_port: z.number().int().min(0).max(65535).default(0),
        ...handshakeKeys(10_000),
      })
      .strict()
      .default({}),
    worker: z
      .object({
        identity: z.string().default('worker'),
        concurrency: z.number().int().min(1).max(1024).default(4),
        retry_delay_ms: ms.default(30_000),
        backoff: z.enum(['fixed', 'exponential']).default('fixed'),
        max_retry_delay_ms: ms.default(3_600_000),
        max_attempts: z.number().int().min(1).default(10_000),
        exchange: z.string().default('default_exchange'),
        routing_key: z.string().default('default_key'),
        group: z.string().default('workers'),
        // 0 = no metrics listener
        // not 9100 (node_exporter's port) nor any other well-known one: next to the broker's ports
        metrics_port: z.number().int().min(0).max(65535).default(5709),
        claim_idle_ms: ms.default(60_000),
        // on SIGTERM, how long to finish the messages in hand before exiting anyway (they are reclaimed)
        stop_timeout_ms: ms.default(30_000),
        // the queue the pipeline delivers into (sender numbers and bodies in clear) and the only
        // identities besides admins that may consume it
        delivery_queue: z.string().default('default_queue'),
        readers: z.array(z.string()).default([]),
        // the broker's HTTPS API for deliver/status calls; defaults to client.api
        broker_api: z.string().optional(),
        // the reconciler (one worker at a time, by a lease in Redis): records still queued this long after
        // they were accepted and absent from Redis (lost with a Redis restart) are put back in the stream;
        // "off" turns it off. See docs/pipeline.md.
        reconcile_after: duration({off: true}).default('2m'),
        // how often the reconciler looks (and the lease is renewed; it lasts three of these)
        reconcile_interval: duration().default('30s'),
      })
      .strict()
      .default({}),
    // the operators' portal (mq portal start, src/lib/portal): web UI, portal and admin APIs over HTTPS
    portal: z
      .object({
        host: host.default('127.0.0.1'),
        port: port.default(8080),
        // server certificate of the portal's HTTPS listener (created from our CA on first start)
        server_identity: z.string().default('portal-server'),
        // client certificate the portal presents to the broker's API (for the live overview)
        identity: z.string().default('portal'),
        // the broker's HTTPS API; defaults to client.api
        broker_api: z.string().optional(),
        // access tokens (JWT, EdDSA) live this long; refresh tokens rotate on every use
        access_ttl_s: z.number().int().min(1).max(86_400).default(900),
        refresh_ttl_s: z.number().int().min(60).default(30 * 86_400),
        // failed logins allowed per account and per source address within login_window_s, then 429
        login_max_per_account: z.number().int().min(1).default(5),
        login_max_per_address: z.number().int().min(1).default(20),
        login_window_s: z.number().int().min(1).default(900),
        // trust X-Forwarded-For from a load balancer (the client address in audit logs and rate limits)
        trust_proxy: z.boolean().default(false),
        // plain-HTTP Prometheus listener on loopback (no client certificate); 0 = none
        metrics_port: z.number().int().min(0).max(65535).default(0),
      })
      .strict()
      .default({}),
    // end-to-end encryption (mq send / mq recv, src/lib/crypto)
    e2e: z
      .object({
        key_max_messages: z.number().int().min(1).max(1_000_000).default(100_000),
        key_max_age_ms: ms.min(1).default(600_000),
        // an envelope carries its sender's signed grant every this many messages (and every second), the
        // others its 32-byte hash. 1 (default): every envelope opens on its own, for any consumer, a
        // dead-letter reader or a new machine; larger only for streams with one receiving home (docs/envelope.md)
        grant_every: z.number().int().min(1).max(1_000_000).default(1),
        key_cache_size: z.number().int().min(1).default(1024),
        publish_window: z.number().int().min(1).max(65_536).default(256),
        accept: z.array(z.enum(['native', 'ciphermq', 'plain'])).min(1).default(['native']),
        // mq recv refuses signed messages older than this and forgets accepted ids older than this (30 days)
        replay_window_ms: ms.min(60_000).default(30 * 86_400_000),
      })
      .strict()
      .default({}),
    relay: z
      .object({
        host: host.default('127.0.0.1'),
        port: port.optional(),
        max_file_bytes: z.number().int().min(1).default(1024 * 1024 * 1024),
        max_text_bytes: z.number().int().min(1).default(16 * 1024 * 1024),
        idle_timeout_ms: ms.default(30_000),
        tls: z
          .object({
            enabled: z.boolean().default(false),
            port: port.default(1358),
            // server certificate pki/issued/<identity>.crt (created on first start if missing)
            identity: z.string().min(1).default('relay'),
            ...handshakeKeys(10_000),
          })
          .strict()
          .default({}),
      })
      .strict()
      .default({}),
  })
  .strict()
  .transform((c) => ({...c, client: {...c.client, api: c.client.api ?? defaultApiUrl(c.broker), broker: c.client.broker ?? defaultBrokerAddress(c.broker)}}))

/** A server listening on every address is reached on loopback by a client of the same home. */
export function clientHost(host: string): string {
  if (host === '0.0.0.0' || host === '::' || host === '[::]') return '127.0.0.1'
  return host.includes(':') ? `[${host}]` : host
}

/** client.broker when unset: the messaging port of this home's broker. */
export function defaultBrokerAddress(b: {host: string; port: number}): string {
  return `${clientHost(b.host)}:${b.port}`
}

/** client.api when unset: the HTTPS API of this home's broker. */
export function defaultApiUrl(b: {api_host: string; api_port: number}): string {
  return `https://${clientHost(b.api_host)}:${b.api_port}`
}

export type MqConfig = z.infer<typeof configSchema>
/** A deep partial, as found in a config file, the environment or flags. */
export type ConfigInput = z.input<typeof configSchema>
