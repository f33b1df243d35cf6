/**
 * Issue 18, failure 6: a worker whose Redis restarts without persistence meets NOGROUP (the
 * stream and its consumer group are gone). It must recreate the group and go on with its one read
 * loop: no second loop and set of timers per restart (which multiplied the load on Redis and made
 * SIGTERM wait behind every extra loop's blocking read).
 */
import assert from 'node:assert/strict'
import {test} from 'node:test'

import {Redis} from 'ioredis'

import {configSchema} from '../../../src/lib/config/schema.js'
import {ApiClient} from '../../../src/lib/http/client.js'
import {clientTlsOptions} from '../../../src/lib/pki/index.js'
import {createRecordsPlugin} from '../../../src/lib/records/plugin.js'
import {connectRedis, pipelineKeys, redisReady} from '../../../src/lib/worker/keys.js'
import {Worker} from '../../../src/lib/worker/worker.js'
import {tempHome} from '../../helpers/home.js'
import {memoryPublisher, pluginServer, privateRedis} from '../../helpers/pipeline.js'
import {testPki} from '../../helpers/pki.js'
import {waitFor} from '../../helpers/services.js'

/** Script calls (the worker's timers: due retries every 20 ms here) Redis served in `ms`. */
async function scriptCallsIn(url: string, ms: number): Promise<number> {
  const r = new Redis(url)
  const calls = async () => {
    const info = await r.info('commandstats')
    let n = 0
    for (const m of info.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) n += Number(m[1])
    return n
  }
  try {
    const a = await calls()
    await new Promise((res) => setTimeout(res, ms))
    return (await calls()) - a
  } finally {
    r.disconnect()
  }
}

test('after Redis restarts (no persistence) the worker recreates its group with one loop, delivers, and stops promptly', {timeout: 90_000}, async () => {
  const h = tempHome('mq-worker-restart-')
  const redisServer = await privateRedis({persistence: false})
  const publisher = memoryPublisher()
  const {home} = await testPki(h.dir, {clients: ['worker'], servers: ['broker']})
  const config = configSchema.parse({redis: {key_prefix: 'mqr:', url: redisServer.url}, worker: {claim_idle_ms: 300, exchange: 'ex', retry_delay_ms: 80, routing_key: 'rk'}})
  const plugin = await createRecordsPlugin({config, home, publisher})
  const api = await pluginServer(home, [plugin])
  const cmd = connectRedis(redisServer.url)
  const blocking = connectRedis(redisServer.url, {blocking: true})
  const feed = connectRedis(redisServer.url)
  await Promise.all([redisReady(cmd), redisReady(blocking), redisReady(feed)])
  const worker = new Worker({blocking, broker: new ApiClient(api.url, clientTlsOptions(home, 'worker'), 2000), concurrency: 2, config, redis: cmd})
  const keys = pipelineKeys(config)
  let n = 0
  const enqueue = async (count: number) => {
    const ids: string[] = []
    for (let i = 0; i < count; i++) {
      const id = `r-${++n}`
      await plugin.store.register({clientId: 'alice', messageId: id, payload: {message_body: id, sender_number: '+4915200000000'}})
      await feed.xadd(keys.stream, '*', 'id', id, 'client', 'alice', 'attempts', '0')
      ids.push(id)
    }
    return ids
  }
  const delivered = (ids: string[]) => ids.filter((id) => publisher.published.some((p) => p.id === id)).length
  let stopped = false
  try {
    await worker.start()
    await worker.start() // a second start while running is a no-op, not a second loop
    const first = await enqueue(3)
    await waitFor(() => delivered(first) === 3, 10_000)
    const before = await scriptCallsIn(redisServer.url, 1000)
    for (let i = 0; i < 3; i++) {
      await redisServer.kill()
      await redisServer.start()
      await redisReady(feed, 10_000).catch(() => {})
      // the worker meets NOGROUP and recreates the stream's group
      await waitFor(async () => (await feed.exists(keys.stream).catch(() => 0)) === 1, 15_000, 50)
    }
    const ids = await enqueue(5)
    await waitFor(() => delivered(ids) === 5, 15_000)
    const after = await scriptCallsIn(redisServer.url, 1000)
    assert.ok(after < before * 1.5 + 5, `the worker's timers multiplied: ${before} script calls/s before the restarts, ${after} after`)
    const t0 = Date.now()
    assert.equal(await worker.stop(), true)
    stopped = true
    const took = Date.now() - t0
    assert.ok(took < 2500, `stop() took ${took} ms`)
  } finally {
    if (!stopped) await worker.stop(1000)
    for (const c of [cmd, blocking, feed]) c.disconnect()
    await api.close()
    await plugin.close!()
    await redisServer.destroy()
    h.cleanup()
  }
})
