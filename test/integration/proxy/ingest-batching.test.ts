import assert from 'node:assert/strict'
import {request} from 'node:https'
import {type TLSSocket, connect} from 'node:tls'
import {after, before, describe, it} from 'node:test'

import {Redis} from 'ioredis'

import {configSchema, type MqConfig} from '../../../src/lib/config/schema.js'
import {ApiClient} from '../../../src/lib/http/client.js'
import {clientTlsOptions, serverTlsOptions} from '../../../src/lib/pki/index.js'
import {ProxyServer} from '../../../src/lib/proxy/server.js'
import {createRecordsPlugin} from '../../../src/lib/records/plugin.js'
import {connectRedis, pipelineKeys, redisReady} from '../../../src/lib/worker/keys.js'
import {tempHome} from '../../helpers/home.js'
import {memoryPublisher, pluginServer, privateRedis} from '../../helpers/pipeline.js'
import {testPki} from '../../helpers/pki.js'
import {uniqueName} from '../../helpers/services.js'

function post(port: number, tls: {cert: Buffer; key: Buffer; ca: Buffer}, body: string): Promise<{status: number; body: any}> {
  return new Promise((resolve, reject) => {
    const req = request({...tls, agent: false, checkServerIdentity: () => undefined, headers: {'content-type': 'application/json'}, host: '127.0.0.1', method: 'POST', path: '/api/v1/messages', port}, (res) => {
      const c: Buffer[] = []
      res.on('data', (d: Buffer) => c.push(d))
      res.on('end', () => resolve({body: JSON.parse(Buffer.concat(c).toString()), status: res.statusCode ?? 0}))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/**
 * n requests over n already-open keep-alive connections, all written in the same turn, so they
 * reach the proxy together as under load (separate handshakes would spread them out).
 */
async function postTogether(port: number, tls: {cert: Buffer; key: Buffer; ca: Buffer}, bodies: string[]): Promise<{status: number; body: any}[]> {
  const socks = await Promise.all(
    bodies.map(
      () =>
        new Promise<TLSSocket>((resolve, reject) => {
          const s = connect({...tls, checkServerIdentity: () => undefined, host: '127.0.0.1', port})
          s.once('secureConnect', () => resolve(s))
          s.once('error', reject)
        }),
    ),
  )
  try {
    const answers = socks.map(
      (s) =>
        new Promise<{status: number; body: any}>((resolve, reject) => {
          let got = ''
          s.on('data', (d: Buffer) => {
            got += d.toString('latin1')
            const end = got.indexOf('\r\n\r\n')
            const len = /content-length: (\d+)/i.exec(got)
            if (end >= 0 && len && got.length >= end + 4 + Number(len[1])) resolve({body: JSON.parse(got.slice(end + 4, end + 4 + Number(len[1]))), status: Number(got.slice(9, 12))})
          })
          s.once('error', reject)
        }),
    )
    for (const [i, s] of socks.entries()) s.write(`POST /api/v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(bodies[i])}\r\n\r\n${bodies[i]}`)
    return await Promise.all(answers)
  } finally {
    for (const s of socks) s.destroy()
  }
}

/** Script runs (EVAL and EVALSHA) this Redis has executed so far. */
async function scriptRuns(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats')
  let n = 0
  for (const m of info.matchAll(/^cmdstat_(?:eval|evalsha):calls=(\d+)/gm)) n += Number(m[1])
  return n
}

describe('mq proxy: concurrent requests share their Redis and records-store work', () => {
  const h = tempHome()
  let config: MqConfig
  let redis: Redis
  let priv: Awaited<ReturnType<typeof privateRedis>>
  let api: Awaited<ReturnType<typeof pluginServer>>
  let proxy: ProxyServer
  let port: number
  let plugin: Awaited<ReturnType<typeof createRecordsPlugin>>
  let alice: {cert: Buffer; key: Buffer; ca: Buffer}
  const body = (i: number) => JSON.stringify({message_body: `batch ${i}`, sender_number: '+4915212345678'})

  before(async () => {
    const {home} = await testPki(h.dir, {clients: ['proxy', 'alice'], servers: ['broker', 'proxy-server']})
    // a Redis of its own: its command counters must not include anyone else's traffic
    priv = await privateRedis()
    config = configSchema.parse({proxy: {rate_per_sec: 0}, redis: {key_prefix: uniqueName('mqbatch') + ':', url: priv.url}})
    plugin = await createRecordsPlugin({config, home, publisher: memoryPublisher()})
    api = await pluginServer(home, [plugin])
    redis = connectRedis(priv.url, {autoPipeline: true})
    await redisReady(redis)
    // this file is not about deadlines: a loaded test machine must not turn a slow first batch into 503s
    proxy = new ProxyServer({broker: new ApiClient(api.url, clientTlsOptions(home, 'proxy'), 20_000), config, redis, registerDeadlineMs: 20_000, tls: serverTlsOptions(home, 'proxy-server')})
    port = (await proxy.listen(0, '127.0.0.1')).port
    const t = clientTlsOptions(home, 'alice')
    alice = {ca: t.ca as Buffer, cert: t.cert as Buffer, key: t.key as Buffer}
    // warm: the first request pays for the broker's and the proxy's cold paths
    assert.equal((await post(port, alice, body(-1))).status, 202)
  })
  after(async () => {
    await proxy.close()
    await api.close()
    redis.disconnect()
    await plugin.close!()
    await priv.destroy()
    h.cleanup()
  })

  it('40 concurrent requests: each accepted with its own position and stream entry, in far fewer Redis script runs than requests', async () => {
    const before = await scriptRuns(redis)
    const rs = await postTogether(port, alice, Array.from({length: 40}, (_, i) => body(i)))
    for (const r of rs) assert.equal(r.status, 202, JSON.stringify(r.body))
    const runs = (await scriptRuns(redis)) - before
    assert.ok(runs <= 20, `${runs} script runs for 40 requests`)
    // positions are the stream's length after each message's own entry: 2..41 after the warm-up's 1, each once
    assert.deepEqual(rs.map((r) => r.body.position).sort((a, b) => a - b), Array.from({length: 40}, (_, i) => i + 2))
    const entries = await redis.xrange(pipelineKeys(config).stream, '-', '+')
    assert.deepEqual(entries.slice(1).map((e) => e[1][1]).sort(), rs.map((r) => r.body.message_id).sort())
    // and every accepted message has its record
    for (const r of rs) assert.equal((await plugin.store.get(r.body.message_id))?.status, 'queued')
  })

  it('message ids grow with time (UUIDv7), so the records index is appended to rather than written all over', async () => {
    const t0 = Date.now()
    const a = await post(port, alice, body(100))
    await new Promise((r) => setTimeout(r, 3))
    const b = await post(port, alice, body(101))
    for (const r of [a, b]) assert.match(r.body.message_id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    assert.ok(b.body.message_id > a.body.message_id, `${b.body.message_id} sorts after ${a.body.message_id}`)
    const ms = Number.parseInt(a.body.message_id.replace('-', '').slice(0, 12), 16)
    assert.ok(ms >= t0 && ms <= Date.now(), 'the id starts with the time of acceptance')
  })

  it('Redis down: every request of a concurrent batch gets 503 and nothing is enqueued', async () => {
    const stream = pipelineKeys(config).stream
    const had = await redis.xlen(stream)
    await priv.stop()
    try {
      const rs = await postTogether(port, alice, Array.from({length: 10}, (_, i) => body(200 + i)))
      for (const r of rs) assert.equal(r.status, 503, JSON.stringify(r.body))
    } finally {
      await priv.start()
    }
    await redisReady(redis)
    assert.equal(await redis.xlen(stream), had)
  })
})
