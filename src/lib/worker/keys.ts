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

/**
 * Whether Redis keeps the stream across a restart: AOF (appendonly yes) or RDB snapshots (a
 * non-empty `save`). CONFIG may be renamed away on managed Redis; then INFO persistence tells AOF
 * and RDB stays unknown (undefined).
 */
export async function redisPersistence(r: Redis): Promise<{aof: boolean; rdb: boolean | undefined}> {
  try {
    const aof = (await r.config('GET', 'appendonly')) as string[]
    const save = (await r.config('GET', 'save')) as string[]
    return {aof: aof[1] === 'yes', rdb: (save[1] ?? '').trim() !== ''}
  } catch {
    const info = await r.info('persistence')
    return {aof: /^aof_enabled:1/m.test(info), rdb: undefined}
  }
}

/** At start: a loud warning when Redis would lose accepted messages on a restart (see docs/pipeline.md). */
export async function warnIfRedisVolatile(r: Redis, logger: {warn: (msg: string, fields?: Record<string, unknown>) => void}): Promise<boolean> {
  const p = await redisPersistence(r).catch(() => undefined)
  if (!p || p.aof || p.rdb !== false) return false
  logger.warn('REDIS HAS NO PERSISTENCE (neither AOF nor RDB): a Redis restart loses every queued stream entry; messages accepted (202) then wait in the records store as "queued" until re-enqueued. Turn on appendonly yes (see docs/pipeline.md).', {appendonly: 'no', save: ''})
  return true
}
