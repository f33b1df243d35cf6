import assert from 'node:assert/strict'
import {request} from 'node:https'
import {after, before, describe, it} from 'node:test'

import {Redis} from 'ioredis'

import {configSchema, type MqConfig} from '../../../src/lib/config/schema.js'
import {ApiClient} from '../../../src/lib/http/client.js'
import {CrlWatcher, clientTlsOptions, serverTlsOptions} from '../../../src/lib/pki/index.js'
import {ProxyServer} from '../../../src/lib/proxy/server.js'
import {createRecordsPlugin} from '../../../src/lib/records/plugin.js'
import {connectRedis, pipelineKeys, redisReady} from '../../../src/lib/worker/keys.js'
import {tempHome} from '../../helpers/home.js'
import {memoryPublisher, pluginServer, privateRedis} from '../../helpers/pipeline.js'
import {testPki} from '../../helpers/pki.js'
import {REDIS_URL, freePort, uniqueName} from '../../helpers/services.js'

interface Res {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: any
}

function post(port: number, tls: {cert?: Buffer; key?: Buffer; ca: Buffer}, body: string | Buffer, headers: Record<string, string> = {'content-type': 'application/json'}, path = '/api/v1/messages', method = 'POST'): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = request({...tls, agent: false, checkServerIdentity: () => undefined, headers, host: '127.0.0.1', method, path, port}, (res) => {
      const c: Buffer[] = []
      res.on('data', (d: Buffer) => c.push(d))
      res.on('end', () => {
        const t = Buffer.concat(c).toString()
        let b: unknown = t
        try {
          b = JSON.parse(t)
        } catch {}
        resolve({body: b, headers: res.headers, status: res.statusCode ?? 0})
      })
    })
    req.on('error', reject)
    req.end(body)
  })
}

describe('mq proxy (mutual TLS ingest into Redis)', () => {
  const h = tempHome()
  const other = tempHome()
  let config: MqConfig
  let redis: Redis
  let api: Awaited<ReturnType<typeof pluginServer>>
  let proxy: ProxyServer
  let port: number
  let plugin: Awaited<ReturnType<typeof createRecordsPlugin>>
  let alice: {cert: Buffer; key: Buffer; ca: Buffer}
  let crl: CrlWatcher
  let home: Awaited<ReturnType<typeof testPki>>['home']
  let ca: Awaited<ReturnType<typeof testPki>>['ca']
  const prefix = uniqueName('mqproxy') + ':'
  const msg = JSON.stringify({message_body: 'Hello from the seed 4711', metadata: {ref: 'secret-ref-99'}, sender_number: '+4915212345678'})

  before(async () => {
    ;({ca, home} = await testPki(h.dir, {clients: ['proxy', 'alice', 'bob', 'carol', 'dave', 'erin'], servers: ['broker', 'proxy-server']}))
    config = configSchema.parse({proxy: {rate_burst: 5, rate_per_sec: 1}, redis: {key_prefix: prefix, url: REDIS_URL}})
    plugin = await createRecordsPlugin({config, home, publisher: memoryPublisher()})
    api = await pluginServer(home, [plugin])
    redis = connectRedis(REDIS_URL)
    await redisReady(redis)
    crl = new CrlWatcher(home, 50)
    proxy = new ProxyServer({broker: new ApiClient(api.url, clientTlsOptions(home, 'proxy'), 900), config, redis, revoked: () => crl.revoked(), tls: serverTlsOptions(home, 'proxy-server')})
    crl.on('change', (pem: Buffer) => proxy.updateTls({crl: pem}))
    crl.start()
    port = (await proxy.listen(0, '127.0.0.1')).port
    const t = clientTlsOptions(home, 'alice')
    alice = {ca: t.ca as Buffer, cert: t.cert as Buffer, key: t.key as Buffer}
  })
  after(async () => {
    crl.stop()
    await proxy.close()
    await api.close()
    const keys = await redis.keys(prefix + '*')
    if (keys.length) await redis.del(...keys)
    redis.disconnect()
    await plugin.close!()
    h.cleanup()
    other.cleanup()
  })

  it('accepts a message: 202 with the seed shape, a sealed record, and only a reference in Redis', async () => {
    const r = await post(port, alice, msg)
    assert.equal(r.status, 202, JSON.stringify(r.body))
    assert.deepEqual(Object.keys(r.body).sort(), ['client_id', 'message_id', 'position', 'queued_at', 'status'])
    assert.equal(r.body.status, 'queued')
    assert.equal(r.body.client_id, 'alice')
    assert.equal(r.body.position, 1)
    const rec = await plugin.store.get(r.body.message_id)
    assert.equal(rec?.status, 'queued')
    assert.equal(rec?.client_id, 'alice')
    const keys = pipelineKeys(config)
    const entries = await redis.xrange(keys.stream, '-', '+')
    assert.equal(entries.length, 1)
    assert.deepEqual(entries[0][1], ['id', r.body.message_id, 'client', 'alice', 'attempts', '0'])
    // nothing sensitive anywhere under our prefix
    for (const k of await redis.keys(prefix + '*')) {
      const dump = (await redis.dump(k)) ?? ''
      for (const s of ['4711', '15212345678', 'secret-ref', 'Hello']) assert.equal(dump.includes(s), false, `${s} in ${k}`)
    }
  })

  it('counts requests and accepted messages in /metrics, cumulatively across scrapes', async () => {
    const scrape = async () => String((await post(port, alice, '', {}, '/metrics', 'GET')).body)
    const count = (text: string, re: RegExp) => Number(re.exec(text)?.[1] ?? 0)
    const acceptedRe = /mq_proxy_messages_accepted_total\{client_id="erin"\} (\d+)/
    const okRe = /mq_proxy_requests_total\{route="POST \/api\/v1\/messages",status="202"\} (\d+)/
    const erin = clientTlsOptions(home, 'erin') as {cert: Buffer; key: Buffer; ca: Buffer}
    const before = await scrape()
    assert.equal((await post(port, erin, msg)).status, 202)
    const first = await scrape()
    assert.equal(count(first, acceptedRe), count(before, acceptedRe) + 1)
    assert.equal(count(first, okRe), count(before, okRe) + 1)
    assert.equal((await post(port, erin, msg)).status, 202)
    const second = await scrape()
    assert.equal(count(second, acceptedRe), count(before, acceptedRe) + 2)
    assert.equal(count(second, okRe), count(before, okRe) + 2)
    // the scrapes themselves are counted too
    assert.ok(count(second, /mq_proxy_requests_total\{route="GET \/metrics",status="200"\} (\d+)/) >= 2)
  })

  it('answers bad input with one JSON error shape and enqueues nothing', async () => {
    const keys = pipelineKeys(config)
    const before = await redis.xlen(keys.stream)
    const cases: [string | Buffer, Record<string, string>, number, string][] = [
      [msg, {'content-type': 'text/plain'}, 415, 'E_CONTENT_TYPE'],
      ['{"sender_number": ', {'content-type': 'application/json'}, 400, 'E_BAD_JSON'],
      ['[1,2]', {'content-type': 'application/json'}, 400, 'E_BAD_JSON'],
      [JSON.stringify({message_body: 'x', sender_number: '0049152'}), {'content-type': 'application/json'}, 422, 'E_SENDER_NUMBER'],
      [JSON.stringify({message_body: 'x', sender_number: '+0152000'}), {'content-type': 'application/json'}, 422, 'E_SENDER_NUMBER'],
      [JSON.stringify({message_body: 'x', sender_number: '+1234567890123456'}), {'content-type': 'application/json'}, 422, 'E_SENDER_NUMBER'],
      [JSON.stringify({message_body: ' \n ', sender_number: '+4915200000000'}), {'content-type': 'application/json'}, 422, 'E_BODY_BLANK'],
      [JSON.stringify({message_body: 'é'.repeat(1001), sender_number: '+4915200000000'}), {'content-type': 'application/json'}, 422, 'E_BODY_TOO_LONG'],
      [JSON.stringify({message_body: 'x', metadata: 'no', sender_number: '+4915200000000'}), {'content-type': 'application/json'}, 422, 'E_METADATA'],
      [Buffer.alloc(70_000, 0x20), {'content-type': 'application/json'}, 413, 'E_TOO_LARGE'],
      [Buffer.from([0xff, 0xfe, 0x00, 0x7b]), {'content-type': 'application/json'}, 400, 'E_BAD_JSON'],
    ]
    for (const [body, headers, status, code] of cases) {
      const r = await post(port, alice, body, headers)
      assert.equal(r.status, status, `${code}: ${JSON.stringify(r.body)}`)
      assert.equal(r.body.error.code, code)
      assert.equal(typeof r.body.error.message, 'string')
    }
    const g = await post(port, alice, '', {}, '/api/v1/messages', 'GET')
    assert.equal(g.status, 405)
    assert.equal((await post(port, alice, '', {}, '/nope', 'GET')).status, 404)
    // exactly 1000 characters is fine
    const ok = await post(port, {...clientTlsOptions(home, 'bob')} as never, JSON.stringify({message_body: 'ü'.repeat(1000), sender_number: '+4915200000000'}))
    assert.equal(ok.status, 202)
    assert.equal(await redis.xlen(keys.stream), before + 1)
  })

  it('counts message_body in code points on the proxy and at the broker register: 1000 emoji in, 1001 out with E_BODY_TOO_LONG', async () => {
    const carol = clientTlsOptions(home, 'carol') as never
    const emoji = (n: number) => JSON.stringify({message_body: '\u{1F600}'.repeat(n), sender_number: '+4915200000000'})
    const ok = await post(port, carol, emoji(1000))
    assert.equal(ok.status, 202, JSON.stringify(ok.body))
    // the register step (the proxy batches it to the broker's records API) stored it
    const rec = await plugin.store.payload(ok.body.message_id)
    assert.equal([...rec!.payload.message_body].length, 1000)
    const tooLong = await post(port, carol, emoji(1001))
    assert.equal(tooLong.status, 422)
    assert.equal(tooLong.body.error.code, 'E_BODY_TOO_LONG')
    // the broker's own check, called directly as a proxy would
    const direct = await new ApiClient(api.url, clientTlsOptions(home, 'proxy'), 5000).request('POST', '/internal/messages/register', {messages: [1000, 1001].map((n, i) => ({client_id: 'carol', message_body: '\u{1F600}'.repeat(n), message_id: `emoji-${i}-${Date.now()}`, sender_number: '+4915200000000'}))})
    const results = (direct.body as {results: {status: string | number; error?: {code: string}}[]}).results
    assert.equal(results[0].status, 'queued', JSON.stringify(results[0]))
    assert.equal(results[1].error?.code, 'E_BODY_TOO_LONG', JSON.stringify(results[1]))
  })

  it('refuses no certificate, another CA, and a revoked certificate', async () => {
    await assert.rejects(post(port, {ca: alice.ca}, msg))
    const foreign = await testPki(other.dir, {clients: ['alice']})
    const ft = clientTlsOptions(foreign.home, 'alice')
    await assert.rejects(post(port, {ca: alice.ca, cert: ft.cert as Buffer, key: ft.key as Buffer}, msg))
    const carol = clientTlsOptions(home, 'carol') as {cert: Buffer; key: Buffer; ca: Buffer}
    assert.equal((await post(port, carol, msg)).status, 202)
    await ca.revoke('carol', 'key-compromise')
    crl.poll(true)
    await assert.rejects(post(port, carol, msg))
  })

  it('rate limits per identity with 429 and Retry-After, leaving others alone', async () => {
    // burst 5 at 1/s: alice already spent some; drain and expect a 429 within burst + 2 requests
    let limited: Res | undefined
    for (let i = 0; i < 8 && !limited; i++) {
      const r = await post(port, alice, msg)
      if (r.status === 429) limited = r
      else assert.equal(r.status, 202)
    }
    assert.ok(limited, 'no 429 within the burst')
    assert.equal(limited.body.error.code, 'E_RATE_LIMITED')
    assert.ok(Number(limited.headers['retry-after']) >= 1)
    const bob = clientTlsOptions(home, 'bob') as {cert: Buffer; key: Buffer; ca: Buffer}
    assert.equal((await post(port, bob, msg)).status, 202)
  })

  it('Idempotency-Key: a retried request gets the same message and one stream entry', async () => {
    const bob = clientTlsOptions(home, 'bob') as {cert: Buffer; key: Buffer; ca: Buffer}
    const keys = pipelineKeys(config)
    const before = await redis.xlen(keys.stream)
    const hd = {'content-type': 'application/json', 'idempotency-key': 'order-42'}
    const a = await post(port, bob, msg, hd)
    const b = await post(port, bob, msg, hd)
    assert.equal(a.status, 202)
    assert.deepEqual(b.body, a.body)
    assert.equal(await redis.xlen(keys.stream), before + 1)
    assert.equal((await post(port, bob, msg, {...hd, 'idempotency-key': 'bad key with spaces'})).status, 400)
  })

  it('answers 503 fast when the broker is down, enqueuing nothing', async () => {
    const keys = pipelineKeys(config)
    const before = await redis.xlen(keys.stream)
    // its own identity: bob's bucket (burst 5 at 1/s) is nearly spent by the tests above
    const bob = clientTlsOptions(home, 'dave') as {cert: Buffer; key: Buffer; ca: Buffer}
    const up = await post(port, bob, '', {}, '/api/v1/health', 'GET')
    assert.equal(up.status, 200)
    assert.equal(up.body.status, 'ok')
    assert.equal(up.body.components.redis.reachable, true)
    assert.equal(up.body.components.broker.reachable, true)
    assert.equal(up.body.components.broker.status, 'ok')
    await api.close()
    const r = await post(port, bob, msg)
    assert.equal(r.status, 503)
    assert.equal(r.body.error.code, 'E_BROKER_UNAVAILABLE')
    assert.equal(await redis.xlen(keys.stream), before)
    const health = await post(port, bob, '', {}, '/api/v1/health', 'GET')
    assert.equal(health.status, 503)
    assert.equal(health.body.components.broker.status, 'failing')
    assert.equal(health.body.components.broker.reachable, false)
    assert.equal(health.body.status, 'failing')
    api = await pluginServer(home, [plugin], api.port)
    assert.equal((await post(port, bob, msg)).status, 202)
  })

  it('a hung broker: every request gets its 503 by the register deadline; those queued behind hung batches are never sent', async () => {
    const {createServer} = await import('node:https')
    let registers = 0
    const hung = createServer(serverTlsOptions(home, 'broker'), (req) => {
      if (req.url === '/internal/messages/register') registers++
      req.resume() // and never answer
    })
    const hungPort = await freePort()
    await new Promise<void>((r) => hung.listen(hungPort, '127.0.0.1', r))
    // a client timeout far beyond the deadline: only the deadline can answer in time
    const p3 = new ProxyServer({broker: new ApiClient(`https://127.0.0.1:${hungPort}`, clientTlsOptions(home, 'proxy'), 60_000), config: configSchema.parse({proxy: {rate_per_sec: 0}, redis: {key_prefix: prefix}}), redis, tls: serverTlsOptions(home, 'proxy-server')})
    const port3 = (await p3.listen(0, '127.0.0.1')).port
    const keys = pipelineKeys(config)
    const before = await redis.xlen(keys.stream)
    const dave = clientTlsOptions(home, 'dave') as {cert: Buffer; key: Buffer; ca: Buffer}
    try {
      const {waitFor} = await import('../../helpers/services.js')
      // a batch goes out and hangs; with it in flight (and fewer than 64 waiting) the next ones queue behind it
      const answers: Promise<Res>[] = [post(port3, dave, msg)]
      await waitFor(() => registers === 1, 10_000, 5)
      for (let i = 0; i < 5; i++) answers.push(post(port3, dave, msg))
      const got = await Promise.all(answers)
      assert.deepEqual(got.map((r) => [r.status, r.body.error?.code]), Array.from({length: 6}, () => [503, 'E_BROKER_UNAVAILABLE']))
      assert.equal(registers, 1, 'a registration past its deadline was still sent to the broker')
      assert.equal(await redis.xlen(keys.stream), before)
    } finally {
      await p3.close()
      await new Promise<void>((r) => {
        hung.close(() => r())
        hung.closeAllConnections()
      })
    }
  })

  it('answers 503 fast when Redis is down, and recovers', async () => {
    const r = await privateRedis()
    const conn = connectRedis(r.url)
    await redisReady(conn)
    const p2 = new ProxyServer({broker: new ApiClient(api.url, clientTlsOptions(home, 'proxy'), 900), config: configSchema.parse({redis: {key_prefix: prefix}}), redis: conn, tls: serverTlsOptions(home, 'proxy-server')})
    const port2 = (await p2.listen(await freePort(), '127.0.0.1')).port
    const bob = clientTlsOptions(home, 'bob') as {cert: Buffer; key: Buffer; ca: Buffer}
    try {
      const {waitFor} = await import('../../helpers/services.js')
      // (a loaded machine may miss the 800 ms command timeout once: that is a 503 too)
      await waitFor(async () => (await post(port2, bob, msg)).status === 202, 10_000, 100)
      await r.stop()
      const down = await post(port2, bob, msg)
      assert.equal(down.status, 503)
      assert.equal(down.body.error.code, 'E_REDIS_UNAVAILABLE')
      await r.start()
      await waitFor(async () => (await post(port2, bob, msg)).status === 202, 10_000, 200)
      const m = await post(port2, bob, '', {}, '/metrics', 'GET')
      assert.match(String(m.body), /mq_proxy_requests_total\{route="POST \/api\/v1\/messages",status="503"\} \d+/)
    } finally {
      await p2.close()
      conn.disconnect()
      await r.destroy()
    }
  })

  it('survives garbage: random bytes after the handshake, an absurd Content-Length, 5000 headers, a non-TLS client', async () => {
    const tls = await import('node:tls')
    const net = await import('node:net')
    const {randomBytes} = await import('node:crypto')
    const dave = clientTlsOptions(home, 'dave')
    for (const junk of [randomBytes(4096), Buffer.from('POST /api/v1/messages HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n'), Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n' + 'X: y\r\n'.repeat(5000) + '\r\n')]) {
      await new Promise<void>((resolve) => {
        const s = tls.connect({...dave, checkServerIdentity: () => undefined, host: '127.0.0.1', port}, () => s.end(junk))
        s.on('error', () => resolve())
        s.on('close', () => resolve())
        s.resume()
      })
    }
    await new Promise<void>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.end(randomBytes(2048)))
      s.on('error', () => resolve())
      s.on('close', () => resolve())
      s.resume()
    })
    const bob = clientTlsOptions(home, 'bob') as {cert: Buffer; key: Buffer; ca: Buffer}
    const h2 = await post(port, bob, '', {}, '/api/v1/health', 'GET')
    assert.ok([200, 503].includes(h2.status))
    assert.equal(typeof h2.body.components, 'object')
  })

  it('works with curl and a client certificate, as in the seed', async () => {
    const {execFile} = await import('node:child_process')
    const {promisify} = await import('node:util')
    // async: the proxy runs in this process, a synchronous curl would block it
    const {stdout: out} = await promisify(execFile)('curl', ['-sS', '--cert', home.issuedCert('dave'), '--key', home.issuedKey('dave'), '--cacert', home.caCert, '-H', 'Content-Type: application/json', '-d', msg, `https://127.0.0.1:${port}/api/v1/messages`])
    const body = JSON.parse(out)
    assert.equal(body.status, 'queued', out)
    assert.equal(body.client_id, 'dave')
    // and without a client certificate curl's handshake is refused
    await assert.rejects(promisify(execFile)('curl', ['-sS', '--cacert', home.caCert, '-H', 'Content-Type: application/json', '-d', msg, `https://127.0.0.1:${port}/api/v1/messages`]))
  })
})
