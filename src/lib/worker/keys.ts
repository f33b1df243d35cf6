import {Redis, type RedisOptions} from 'ioredis'

import type {MqConfig} from '../config/schema.js'
import {UnavailableError} from '../errors.js'

/**
 * Redis keys of the ingest pipeline, shared by proxies and workers. Nothing under these keys
 * holds a phone number or a body: the stream carries only message ids and client identities;
 * the broker keeps the sealed payload.
 */
export function pipelineKeys(config: Pick<MqConfig, 'redis' | 'proxy'>) {
  const base = `${config.redis.key_prefix}${config.proxy.stream}`
  return {
    /** the ingest stream (consumer group = worker.group) */
    stream: base,
    /** messages that exhausted worker.max_attempts */
    dead: `${base}:dead`,
    /** delayed retries: ZSET scored by due time (ms), member = JSON entry */
    retry: `${base}:retry`,
    /** Idempotency-Key -> accepted response */
    idem: (client: string, key: string) => `${base}:idem:${client}:${key}`,
    /** per-identity token bucket */
    rate: (client: string) => `${base}:rate:${client}`,
  }
}

export type PipelineKeys = ReturnType<typeof pipelineKeys>

/**
 * A Redis connection that fails fast while Redis is down (no offline queue, short timeouts), so
 * the proxy can answer 503 within a second, and that keeps reconnecting in the background.
 */
export function connectRedis(url: string, opts: {commandTimeoutMs?: number; blocking?: boolean; autoPipeline?: boolean} = {}): Redis {
  const o: RedisOptions = {
    commandTimeout: opts.blocking ? undefined : opts.commandTimeoutMs ?? 800,
    connectTimeout: 800,
    // many concurrent requests' commands leave in one write
    enableAutoPipelining: opts.autoPipeline ?? false,
    enableOfflineQueue: false,
    lazyConnect: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (n) => Math.min(1000, 50 * n),
  }
  const r = new Redis(url, o)
  r.on('error', () => {}) // reconnects on its own; callers see failed commands
  return r
}

/** Resolves once the connection is ready, or throws UnavailableError after `timeoutMs`. */
export async function redisReady(r: Redis, timeoutMs = 5000): Promise<void> {
  if (r.status === 'ready') return
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      r.off('ready', ok)
      reject(new UnavailableError('E_REDIS_UNAVAILABLE', `Redis is not reachable within ${timeoutMs} ms.`, {hint: 'Try this: check that Redis runs and redis.url (MQ_REDIS_URL) is right.'}))
    }, timeoutMs)
    const ok = () => {
      clearTimeout(t)
      resolve()
    }
    r.once('ready', ok)
  })
}
