/**
 * Issue 18, failures 3 and 4, one rule: a request answered 503 was not accepted, so a record it left
 * behind ends failed (E_NOT_ACCEPTED) and is never delivered; a retry with the same Idempotency-Key
 * brings that same message back. Two ways to get there: the proxy recorded the message but could
 * not enqueue it, or the records store committed it after the proxy's deadline (by the broker's
 * clock, or by the proxy's when the answer came back too late). The reconciler's
 * list of undelivered records leaves such records out.
 */
import assert from 'node:assert/strict'
import {type Server, type Socket, connect, createServer} from 'node:net'
import {after, before, describe, it} from 'node:test'

import type {Redis} from 'ioredis'

import {configSchema, type MqConfig} from '../../../src/lib/config/schema.js'
import {ApiClient} from '../../../src/lib/http/client.js'
import {clientTlsOptions, serverTlsOptions} from '../../../src/lib/pki/index.js'
import {ProxyServer} from '../../../src/lib/proxy/server.js'
import {createRecordsPlugin} from '../../../src/lib/records/plugin.js'
import {connectRedis, pipelineKeys, redisReady} from '../../../src/lib/worker/keys.js'
import {tempHome} from '../../helpers/home.js'
import {memoryPublisher, pluginServer} from '../../helpers/pipeline.js'
import {testPki} from '../../helpers/pki.js'
import {REDIS_URL, uniqueName} from '../../helpers/services.js'

describe('records of requests answered 503 end failed; a same-key retry revives them', () => {
  const h = tempHome()
  const prefix = uniqueName('mqnotacc') + ':'
  let config: MqConfig
  let redis: Redis
  let plugin: Awaited<ReturnType<typeof createRecordsPlugin>>
  let api: Awaited<ReturnType<typeof pluginServer>>
  let proxy: ProxyServer
  let client: ApiClient
  let asProxy: ApiClient
  let asWorker: ApiClient
  let home: Awaited<ReturnType<typeof testPki>>['home']

  before(async () => {
    ;({home} = await testPki(h.dir, {clients: ['proxy', 'worker', 'alice'], servers: ['broker', 'proxy-server']}))
    config = configSchema.parse({proxy: {rate_per_sec: 0}, redis: {key_prefix: prefix, url: REDIS_URL}})
    plugin = await createRecordsPlugin({config, home, publisher: memoryPublisher()})
    api = await pluginServer(home, [plugin])
    redis = connectRedis(REDIS_URL)
    await redisReady(redis)
    proxy = new ProxyServer({broker: new ApiClient(api.url, clientTlsOptions(home, 'proxy'), 900), config, redis, tls: serverTlsOptions(home, 'proxy-server')})
    const port = (await proxy.listen(0, '127.0.0.1')).port
    client = new ApiClient(`https://127.0.0.1:${port}`, clientTlsOptions(home, 'alice'), 5000)
    asProxy = new ApiClient(api.url, clientTlsOptions(home, 'proxy'), 5000)
    asWorker = new ApiClient(api.url, clientTlsOptions(home, 'worker'), 5000)
  })
  after(async () => {
    client?.close()
    asProxy?.close()
    asWorker?.close()
    await proxy?.close()
    await api?.close()
    const keys = await redis.keys(prefix + '*')
    if (keys.length) await redis.del(...keys)
    redis.disconnect()
    await plugin?.close!()
    h.cleanup()
  })

  const send = (body: string, idem?: string) =>
    client.request<{message_id?: string; error?: {code: string}}>('POST', '/api/v1/messages', {message_body: body, sender_number: '+4915200000000'}, idem ? {'idempotency-key': idem} : {})
  const undelivered = async () => (await asWorker.call<{messages: {message_id: string}[]}>('GET', '/internal/messages/undelivered?older_than_ms=0')).messages.map((m) => m.message_id)

  it('recorded but never enqueued (Redis refused the entry): failed, with or without an Idempotency-Key; the keyed retry is the same message, queued again', async () => {
    const keys = pipelineKeys(config)
    // a stream key of the wrong type: XADD fails, everything else in Redis works
    await redis.set(keys.stream, 'not a stream')
    const plain = await send('no key')
    const keyed = await send('with key', 'order-7')
    assert.deepEqual([plain.status, plain.body.error?.code, keyed.status, keyed.body.error?.code], [503, 'E_REDIS_UNAVAILABLE', 503, 'E_REDIS_UNAVAILABLE'])
    // the proxy's status call is not awaited by the answer
    const {waitFor} = await import('../../helpers/services.js')
    await waitFor(async () => (await plugin.store.list({status: 'failed'})).length === 2, 5000, 20)
    for (const r of await plugin.store.list({status: 'failed'})) assert.match(r.last_error ?? '', /^E_NOT_ACCEPTED: never enqueued/)
    assert.deepEqual(await undelivered(), [])

    await redis.del(keys.stream)
    const again = await send('with key', 'order-7')
    assert.equal(again.status, 202)
    const failed = await plugin.store.list({status: 'failed'})
    assert.equal(failed.length, 1, 'the keyed record was not revived')
    const revived = (await plugin.store.list({status: 'queued'})).find((r) => r.message_id === again.body.message_id)
    assert.ok(revived, 'the retry made a new message instead of reviving the refused one')
    assert.equal(revived.last_error, null)
    const entries = await redis.xrange(keys.stream, '-', '+')
    assert.deepEqual(entries.map(([, f]) => f[1]), [again.body.message_id])
    assert.deepEqual(await undelivered(), [again.body.message_id])
  })

  it('committed after the proxy stopped waiting (deadline_ms): answered as an error, recorded failed, left out of the undelivered list', async () => {
    const reg = (id: string, deadline_ms: number) =>
      asProxy.call<{results: {status?: number; error?: {code: string}; created?: boolean}[]}>('POST', '/internal/messages/register', {
        deadline_ms,
        messages: [{client_id: 'alice', message_body: `late ${id}`, message_id: id, sender_number: '+4915200000000'}],
      })
    // no time left: whatever the store commits is late
    const late = await reg('late-1', 0)
    assert.deepEqual(late.results.map((r) => [r.status, r.error?.code]), [[503, 'E_REGISTER_LATE']])
    const rec = await plugin.store.get('late-1')
    assert.equal(rec?.status, 'failed')
    assert.match(rec?.last_error ?? '', /^E_NOT_ACCEPTED: the records store answered after the proxy had answered 503/)
    assert.equal((await undelivered()).includes('late-1'), false)
    // in time: queued as usual; the same id retried in time revives the late one
    const ok = await reg('late-1', 5000)
    assert.deepEqual(ok.results.map((r) => [r.error?.code, r.created]), [[undefined, true]])
    assert.equal((await plugin.store.get('late-1'))?.status, 'queued')
    assert.equal((await undelivered()).includes('late-1'), true)
  })

  it('answered in time by the broker, but the answer reached the proxy after its deadline: the proxy reports it, the record ends failed', async () => {
    // a TCP hop between proxy and broker API that holds the broker's answers back while slow is set
    let slow = true
    const shim: Server = createServer((down: Socket) => {
      const up = connect(Number(new URL(api.url).port), '127.0.0.1')
      down.pipe(up)
      up.on('data', (b: Buffer) => {
        if (!slow) return void down.write(b)
        up.pause()
        setTimeout(() => {
          down.write(b)
          up.resume()
        }, 1500)
      })
      const end = () => (up.destroy(), down.destroy())
      up.on('error', end).on('close', end)
      down.on('error', end).on('close', end)
    })
    await new Promise<void>((r) => shim.listen(0, '127.0.0.1', r))
    const port = (shim.address() as {port: number}).port
    const slowProxy = new ProxyServer({broker: new ApiClient(`https://127.0.0.1:${port}`, clientTlsOptions(home, 'proxy'), 900), config, redis, registerDeadlineMs: 300, tls: serverTlsOptions(home, 'proxy-server')})
    const slowClient = new ApiClient(`https://127.0.0.1:${(await slowProxy.listen(0, '127.0.0.1')).port}`, clientTlsOptions(home, 'alice'), 5000)
    try {
      // one warm-up request with answers on time: the TLS session to the broker is open
      slow = false
      assert.equal((await slowClient.request('POST', '/api/v1/messages', {message_body: 'warm', sender_number: '+4915200000000'})).status, 202)
      slow = true
      const before = new Set((await plugin.store.list({limit: 1000})).map((r) => r.message_id))
      const r = await slowClient.request<{error?: {code: string}}>('POST', '/api/v1/messages', {message_body: 'answered late', sender_number: '+4915200000000'})
      assert.equal(r.status, 503)
      // the broker recorded it in time by its own clock: queued, until the proxy's report arrives
      const {waitFor} = await import('../../helpers/services.js')
      let late: {message_id: string; status: string; last_error: string | null} | undefined
      await waitFor(async () => {
        late = (await plugin.store.list({limit: 1000})).find((x) => !before.has(x.message_id))
        return late !== undefined
      }, 5000, 20)
      slow = false
      await waitFor(async () => (await plugin.store.get(late!.message_id))?.status === 'failed', 10_000, 50)
      assert.match((await plugin.store.get(late!.message_id))?.last_error ?? '', /^E_NOT_ACCEPTED: the proxy answered 503/)
      assert.equal((await undelivered()).includes(late!.message_id), false, 'a refused request left for the reconciler to deliver')
    } finally {
      slowClient.close()
      await slowProxy.close()
      shim.close()
    }
  })
})
