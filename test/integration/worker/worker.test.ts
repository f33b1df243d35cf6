import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'

import type {Redis} from 'ioredis'

import {configSchema, type MqConfig} from '../../../src/lib/config/schema.js'
import {ApiClient} from '../../../src/lib/http/client.js'
import {clientTlsOptions} from '../../../src/lib/pki/index.js'
import {createRecordsPlugin} from '../../../src/lib/records/plugin.js'
import {connectRedis, pipelineKeys, redisReady} from '../../../src/lib/worker/keys.js'
import {Worker, callSize, retryDelay} from '../../../src/lib/worker/worker.js'
import {tempHome} from '../../helpers/home.js'
import {memoryPublisher, pluginServer} from '../../helpers/pipeline.js'
import {testPki} from '../../helpers/pki.js'
import {REDIS_URL, uniqueName, waitFor} from '../../helpers/services.js'

describe('mq worker (Redis stream -> broker internal API)', () => {
  const h = tempHome()
  const publisher = memoryPublisher()
  let config: MqConfig
  let api: Awaited<ReturnType<typeof pluginServer>>
  let plugin: Awaited<ReturnType<typeof createRecordsPlugin>>
  let home: Awaited<ReturnType<typeof testPki>>['home']
  let redis: Redis
  const conns: Redis[] = []
  const prefix = uniqueName('mqworker') + ':'
  let n = 0

  const newWorker = async (over: Partial<MqConfig['worker']> = {}, consumer?: string) => {
    const cfg = {...config, worker: {...config.worker, ...over}}
    const cmd = connectRedis(REDIS_URL)
    const blocking = connectRedis(REDIS_URL, {blocking: true})
    conns.push(cmd, blocking)
    await Promise.all([redisReady(cmd), redisReady(blocking)])
    return new Worker({blocking, broker: new ApiClient(api.url, clientTlsOptions(home, 'worker'), 2000), config: cfg, consumer, redis: cmd})
  }

  /** What the proxy does: register with the broker, then XADD a reference. */
  const enqueue = async (count: number): Promise<string[]> => {
    const ids: string[] = []
    for (let i = 0; i < count; i++) {
      const id = `m-${++n}`
      await plugin.store.register({clientId: 'alice', messageId: id, payload: {message_body: `body ${id}`, sender_number: '+4915200000000'}})
      await redis.xadd(pipelineKeys(config).stream, '*', 'id', id, 'client', 'alice', 'attempts', '0')
      ids.push(id)
    }
    return ids
  }

  const delivered = (ids: string[]) => publisher.published.filter((p) => ids.includes(p.id!)).map((p) => p.id!)

  before(async () => {
    ;({home} = await testPki(h.dir, {clients: ['worker'], servers: ['broker']}))
    config = configSchema.parse({redis: {key_prefix: prefix, url: REDIS_URL}, worker: {claim_idle_ms: 300, exchange: 'ex', max_attempts: 3, retry_delay_ms: 40, routing_key: 'rk'}})
    plugin = await createRecordsPlugin({config, home, publisher})
    api = await pluginServer(home, [plugin])
    redis = connectRedis(REDIS_URL)
    await redisReady(redis)
  })
  after(async () => {
    await api.close()
    const keys = await redis.keys(prefix + '*')
    if (keys.length) await redis.del(...keys)
    for (const c of conns) c.disconnect()
    redis.disconnect()
    await plugin.close!()
    h.cleanup()
  })

  it('delivers each message once into the configured exchange and acknowledges it', async () => {
    const w = await newWorker()
    await w.start()
    const ids = await enqueue(20)
    await waitFor(() => delivered(ids).length === 20)
    await w.stop()
    assert.deepEqual(delivered(ids).sort(), [...ids].sort())
    assert.ok(publisher.published.every((p) => p.exchange === 'ex' && p.key === 'rk'))
    for (const id of ids) assert.equal((await plugin.store.get(id))!.status, 'delivered')
    const keys = pipelineKeys(config)
    assert.equal(await redis.xlen(keys.stream), 0)
    const pending = (await redis.xpending(keys.stream, config.worker.group)) as [number]
    assert.equal(Number(pending[0]), 0)
    const metrics = await w.registry.metrics()
    assert.match(metrics, /mq_worker_delivered_total 20/)
    assert.match(metrics, /mq_pipeline_depth\{key="stream"\} 0/)
  })

  it('retries with a delay, then marks an always-failing message failed and dead-letters it', async () => {
    publisher.fail = true
    const w = await newWorker()
    await w.start()
    const [id] = await enqueue(1)
    const keys = pipelineKeys(config)
    await waitFor(async () => (await redis.xlen(keys.dead)) === 1)
    await w.stop()
    publisher.fail = false
    const [[, fields]] = await redis.xrange(keys.dead, '-', '+')
    assert.equal(fields[1], id)
    assert.equal(fields[fields.indexOf('attempts') + 1], '3')
    const row = (await plugin.store.get(id))!
    assert.equal(row.status, 'failed')
    assert.equal(row.attempts, 3)
    assert.match(row.last_error ?? '', /publish failed/)
    assert.equal(delivered([id]).length, 0)
    assert.equal(await redis.zcard(keys.retry), 0)
    await redis.del(keys.dead)
  })

  it('recovers a broker outage: retries deliver everything exactly once', async () => {
    const w = await newWorker({max_attempts: 10_000, retry_delay_ms: 100})
    await w.start()
    await api.close()
    const ids = await enqueue(10)
    await waitFor(async () => (await redis.zcard(pipelineKeys(config).retry)) > 0)
    api = await pluginServer(home, [plugin], api.port)
    await waitFor(() => delivered(ids).length === 10, 15_000)
    await w.stop()
    assert.deepEqual(delivered(ids).sort(), [...ids].sort())
    for (const id of ids) assert.equal((await plugin.store.get(id))!.status, 'delivered')
  })

  it("reclaims a crashed worker's pending entries: nothing is lost", async () => {
    const keys = pipelineKeys(config)
    await redis.xgroup('CREATE', keys.stream, config.worker.group, '0', 'MKSTREAM').catch(() => {})
    const ids = await enqueue(8)
    // the "crashed" consumer read the batch and died before acknowledging anything
    const taken = (await redis.xreadgroup('GROUP', config.worker.group, 'crashed', 'COUNT', 100, 'STREAMS', keys.stream, '>')) as [string, unknown[]][]
    assert.equal(taken[0][1].length, 8)
    const w = await newWorker({}, 'survivor')
    await w.start()
    await waitFor(() => delivered(ids).length === 8, 10_000)
    await w.stop()
    assert.deepEqual(delivered(ids).sort(), [...ids].sort())
    const pending = (await redis.xpending(keys.stream, config.worker.group)) as [number]
    assert.equal(Number(pending[0]), 0)
  })

  it('stop() finishes the messages in hand before returning', async () => {
    const w = await newWorker({}, 'stopper')
    await w.start()
    const ids = await enqueue(6)
    await waitFor(() => w.busy > 0 || delivered(ids).length > 0, 5000, 1)
    await w.stop()
    assert.equal(w.busy, 0)
    const keys = pipelineKeys(config)
    // everything it had taken is settled: delivered and acknowledged, or still unread in the stream
    const pending = (await redis.xpending(keys.stream, config.worker.group)) as [number]
    assert.equal(Number(pending[0]), 0)
    const left = await redis.xlen(keys.stream)
    assert.equal(delivered(ids).length + left, 6)
    const w2 = await newWorker()
    await w2.start()
    await waitFor(() => delivered(ids).length === 6)
    await w2.stop()
  })

  it('acknowledges a delivered batch with one XACK and one XDEL for all its entries', async () => {
    const w = await newWorker({}, 'batch-acker')
    const cmd = conns.at(-2)!
    // count the XACK/XDEL commands the worker queues and the ids each carries
    const acks: number[] = []
    const dels: number[] = []
    const multi = cmd.multi.bind(cmd)
    cmd.multi = ((...a: Parameters<typeof multi>) => {
      const m = multi(...a)
      const [xack, xdel] = [m.xack.bind(m), m.xdel.bind(m)]
      m.xack = ((...args: string[]) => (acks.push(args.length - 2), xack(...(args as [string, string, string])))) as typeof m.xack
      m.xdel = ((...args: string[]) => (dels.push(args.length - 1), xdel(...(args as [string, string])))) as typeof m.xdel
      return m
    }) as typeof cmd.multi
    const keys = pipelineKeys(config)
    await redis.xgroup('CREATE', keys.stream, config.worker.group, '0', 'MKSTREAM').catch(() => {})
    const ids = await enqueue(10)
    const read = (await redis.xreadgroup('GROUP', config.worker.group, 'batch-acker', 'COUNT', 10, 'STREAMS', keys.stream, '>')) as [string, [string, string[]][]][]
    const entries = read[0][1].map(([entryId, f]) => ({attempts: 0, client: f[3], entryId, id: f[1]}))
    assert.deepEqual(entries.map((e) => e.id), ids)
    await w.processBatch(entries)
    assert.deepEqual(delivered(ids).sort(), [...ids].sort())
    assert.deepEqual([acks, dels], [[10], [10]])
    assert.equal(Number(((await redis.xpending(keys.stream, config.worker.group)) as [number])[0]), 0)
    assert.equal(await redis.xlen(keys.stream), 0)
  })

  it('frees its slots once the broker answered: the next read and call do not wait for the XACK', async () => {
    const w = await newWorker({concurrency: 1}, 'early-release')
    const cmd = conns.at(-2)!
    // hold the first acknowledgement (MULTI XACK XDEL) until the test lets it go
    let let_go!: () => void
    const held = new Promise<void>((r) => (let_go = r))
    let heldOnce = false
    const multi = cmd.multi.bind(cmd)
    cmd.multi = ((...a: Parameters<typeof multi>) => {
      const m = multi(...a)
      if (!heldOnce) {
        heldOnce = true
        const exec = m.exec.bind(m)
        m.exec = (async () => {
          await held
          return exec()
        }) as typeof m.exec
      }
      return m
    }) as typeof cmd.multi
    await w.start()
    const ids = await enqueue(3)
    // one slot: the second and third messages go while the first one's acknowledgement is held
    await waitFor(() => delivered(ids).length === 3)
    const keys = pipelineKeys(config)
    const pending = async () => Number(((await redis.xpending(keys.stream, config.worker.group)) as [number])[0])
    // the later two acknowledged, the first still pending behind its held XACK
    await waitFor(async () => (await pending()) === 1)
    // stop() waits for acknowledgements still under way, not only for the slots
    const stopped = w.stop()
    let_go()
    assert.equal(await stopped, true)
    assert.equal(await pending(), 0)
    assert.equal(await redis.xlen(keys.stream), 0)
  })

  it('a read whose entries carry no message id frees its slot: later messages are still delivered', async () => {
    const w = await newWorker({concurrency: 1}, 'bad-entry')
    const keys = pipelineKeys(config)
    await redis.xgroup('CREATE', keys.stream, config.worker.group, '0', 'MKSTREAM').catch(() => {})
    await redis.xadd(keys.stream, '*', 'client', 'alice', 'attempts', '0')
    await w.start()
    const ids = await enqueue(2)
    await waitFor(() => delivered(ids).length === 2)
    // the bad entry cycles stream -> retry -> stream until max_attempts, then is dead-lettered with
    // its reason; wait for that before stopping (a stop in between can leave it back in the stream)
    await waitFor(async () => (await redis.xlen(keys.dead)) === 1)
    await w.stop()
    const [[, fields]] = await redis.xrange(keys.dead, '-', '+')
    assert.match(fields[fields.indexOf('error') + 1], /^E_BAD_ENTRY: stream entry carries no message id/)
    assert.equal(fields[fields.indexOf('attempts') + 1], '3')
    assert.equal(await redis.zcard(keys.retry), 0)
    await redis.del(keys.retry, keys.dead)
  })

  it('sizes its broker calls: at least 32 entries, half the window from 64 on, at most 100', () => {
    assert.deepEqual([1, 4, 32, 63, 64, 100, 128, 256, 1024].map(callSize), [32, 32, 32, 32, 32, 50, 64, 100, 100])
  })

  it('computes fixed and exponential-with-jitter retry delays', () => {
    const c = configSchema.parse({}).worker
    assert.equal(retryDelay(c, 5), 30_000)
    const e = {...c, backoff: 'exponential' as const, max_retry_delay_ms: 10_000, retry_delay_ms: 1000}
    assert.equal(retryDelay(e, 1, () => 0), 500)
    assert.equal(retryDelay(e, 1, () => 1), 1000)
    assert.equal(retryDelay(e, 3, () => 1), 4000)
    assert.equal(retryDelay(e, 50, () => 1), 10_000)
  })
})
