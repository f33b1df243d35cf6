import type {Redis, Result} from 'ioredis'

// Token bucket per identity, refilled continuously at `rate` tokens/s up to `burst`. One atomic
// script on Redis's clock, so any number of proxies share one bucket per client.
const SCRIPT = `
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil or ts == nil then tokens = burst ts = now end
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(math.max(now, ts)))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
`

export interface RateDecision {
  allowed: boolean
  /** ms until one token is available (0 when allowed) */
  retryAfterMs: number
}

export class RateLimiter {
  constructor(
    private readonly redis: Redis,
    private readonly rate: number,
    private readonly burst: number,
  ) {
    if (!redis.rateTake) redis.defineCommand('rateTake', {lua: SCRIPT, numberOfKeys: 1})
  }

  get enabled(): boolean {
    return this.rate > 0
  }

  async take(key: string): Promise<RateDecision> {
    if (!this.enabled) return {allowed: true, retryAfterMs: 0}
    const [allowed, wait] = (await this.redis.rateTake(key, this.rate, this.burst)) as [number, number]
    return {allowed: allowed === 1, retryAfterMs: Number(wait)}
  }
}

declare module 'ioredis' {
  interface RedisCommander<Context> {
    rateTake(key: string, rate: number, burst: number): Result<[number, number], Context>
    moveDue(retryKey: string, streamKey: string, now: number, max: number): Result<number, Context>
  }
}
