/**
 * Issue 18, failure 3 (start-up half): a Redis with neither AOF nor RDB loses the stream on a
 * restart, so proxies and workers warn loudly at start; with AOF they stay quiet.
 */
import assert from 'node:assert/strict'
import {test} from 'node:test'

import {Logger} from '../../../src/lib/log.js'
import {connectRedis, redisPersistence, redisReady, warnIfRedisVolatile} from '../../../src/lib/worker/keys.js'
import {privateRedis} from '../../helpers/pipeline.js'

test('a Redis without AOF or RDB is reported loudly at start; one with AOF is not', {timeout: 30_000}, async () => {
  for (const persistence of [false, true]) {
    const server = await privateRedis({persistence})
    const r = connectRedis(server.url)
    try {
      await redisReady(r)
      assert.deepEqual(await redisPersistence(r), {aof: persistence, rdb: false})
      const lines: string[] = []
      const warned = await warnIfRedisVolatile(r, new Logger('info', 'worker', (l) => lines.push(l)))
      assert.equal(warned, !persistence)
      if (persistence) assert.deepEqual(lines, [])
      else assert.match(lines.join('\n'), /WARN .*REDIS HAS NO PERSISTENCE \(neither AOF nor RDB\)/)
    } finally {
      r.disconnect()
      await server.destroy()
    }
  }
})
