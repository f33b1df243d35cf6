import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import net from 'node:net'
import tls from 'node:tls'
import {after, before, describe, test} from 'node:test'

import type {BrokerClient, Delivery} from '../../../src/lib/client/client.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {loadConfig} from '../../../src/lib/config/load.js'
import {CertificateAuthority, clientTlsOptions} from '../../../src/lib/pki/index.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {uniqueName, waitFor} from '../../helpers/services.js'

const MAX_PAYLOAD = 64 * 1024
let broker: BrokerProcess
let admin: BrokerClient

before(async () => {
  broker = await spawnBroker({
    ciphermq: true,
    // the CipherMQ listener reaches only what is granted: the test's cq_* queues and ce_* exchanges
    env: {MQ_BROKER_CIPHERMQ_EXCHANGES: 'ce_*', MQ_BROKER_CIPHERMQ_QUEUES: 'cq_*,empty_*', MQ_BROKER_CRL_CHECK_INTERVAL_MS: '200', MQ_BROKER_HANDSHAKE_TIMEOUT_MS: '1500', MQ_BROKER_MAX_PAYLOAD: String(MAX_PAYLOAD)},
  })
  admin = await broker.connect()
})

after(async () => {
  await admin?.close()
  await broker?.cleanup()
})

/** one round trip on a connection: every DELIVER the broker sent before it has arrived */
const sync = (c: BrokerClient) => c.listQueues()

describe('routing', () => {
  test('direct, fanout and topic exchanges and the default exchange', async () => {
    const n = uniqueName('r')
    const q = (s: string) => `${n}.${s}`
    for (const s of ['d1', 'd2', 'f1', 'f2', 't1', 't2']) await admin.declareQueue(q(s))
    await admin.declareExchange(q('dx'), 'direct')
    await admin.declareExchange(q('fx'), 'fanout')
    await admin.declareExchange(q('tx'), 'topic')
    await admin.bind(q('d1'), q('dx'), 'red')
    await admin.bind(q('d2'), q('dx'), 'blue')
    await admin.bind(q('f1'), q('fx'), '')
    await admin.bind(q('f2'), q('fx'), '')
    await admin.bind(q('t1'), q('tx'), 'eu.*.orders')
    await admin.bind(q('t2'), q('tx'), 'eu.#')
    assert.deepEqual((await admin.publish(q('dx'), 'red', Buffer.from('to-d1'))).queues, [q('d1')])
    assert.deepEqual((await admin.publish(q('fx'), 'x', Buffer.from('to-all'))).queues.sort(), [q('f1'), q('f2')])
    assert.deepEqual((await admin.publish(q('tx'), 'eu.de.orders', Buffer.from('t'))).queues.sort(), [q('t1'), q('t2')])
    assert.deepEqual((await admin.publish(q('tx'), 'eu.fr', Buffer.from('t2'))).queues, [q('t2')])
    assert.deepEqual((await admin.publish('', q('d2'), Buffer.from('by-name'))).queues, [q('d2')])
    const d1 = await admin.get(q('d1'))
    assert.equal(d1?.body.toString(), 'to-d1')
    assert.equal(d1?.exchange, q('dx'))
    assert.equal(d1?.routingKey, 'red')
    assert.equal((await admin.get(q('f2')))?.body.toString(), 'to-all')
    assert.equal((await admin.get(q('d2')))?.body.toString(), 'by-name')
    assert.equal(await admin.get(q('d1')), null)
  })

  test('an unroutable publish is an error to the publisher, not a silent drop', async () => {
    const x = uniqueName('x')
    await admin.declareExchange(x, 'direct')
    await assert.rejects(admin.publish(x, 'nobody', Buffer.from('lost?')), {code: 'E_UNROUTABLE'})
    await assert.rejects(admin.publish(uniqueName('nope'), 'k', Buffer.from('?')), {code: 'E_NOT_FOUND'})
  })

  test('CipherMQ defaults: default_exchange -> default_queue with default_key', async () => {
    const r = await admin.publish('default_exchange', 'default_key', Buffer.from('{"message_id":"x"}'))
    assert.deepEqual(r.queues, ['default_queue'])
    await admin.purgeQueue('default_queue')
  })
})

describe('delivery', () => {
  test('confirms carry the message id; binary bodies and headers arrive intact; statuses progress', async () => {
    const q = uniqueName('c')
    await admin.declareQueue(q, {durable: true})
    const body = Buffer.from([0, 1, 2, 10, 13, 255, 0x25, 0x3d, 32])
    const r = await admin.publish('', q, body, {headers: {'content-type': 'application/octet-stream', trace: 'a b=c'}, messageId: `${q}-1`})
    assert.equal(r.messageId, `${q}-1`)
    assert.equal((await admin.messageStatus(r.messageId))?.status, 'sent')
    const d = (await admin.get(q))!
    assert.deepEqual(d.body, body)
    assert.deepEqual(d.headers, {'content-type': 'application/octet-stream', trace: 'a b=c'})
    assert.equal(d.deliveryCount, 1)
    assert.equal(d.redelivered, false)
    assert.equal((await admin.messageStatus(r.messageId))?.status, 'delivered')
    admin.ack(d.deliveryTag)
    await sync(admin)
    assert.deepEqual(await admin.messageStatus(r.messageId), {messageId: r.messageId, queue: q, status: 'acknowledged'})
  })

  test('batch confirms: one CONFIRM covers many publishes, in order, errors stay per publish', async () => {
    const q = uniqueName('bc')
    const x = uniqueName('bcx')
    await admin.declareQueue(q, {durable: true})
    await admin.declareExchange(x, 'direct')
    await admin.bind(q, x, 'k')
    const c = await broker.connect('admin', {batchConfirms: true})
    try {
      const results = await Promise.allSettled(Array.from({length: 200}, (_, i) => c.publish(x, i === 57 ? 'nowhere' : 'k', Buffer.from(`m${i}`), i === 3 ? {messageId: 'mine-3'} : {})))
      assert.equal(results.filter((r) => r.status === 'rejected').length, 1)
      const bad = results[57]
      assert.ok(bad.status === 'rejected' && (bad.reason as {code: string}).code === 'E_UNROUTABLE')
      const ids = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.messageId] : []))
      assert.equal(new Set(ids).size, 199)
      assert.equal(ids[3], 'mine-3')
      const first = (await admin.get(q))!
      assert.equal(first.messageId, ids[0])
      assert.equal((await admin.messageStatus(ids[198]))?.status, 'sent')
      assert.equal((await admin.listQueues()).find((y) => y.name === q)!.messages, 198)
    } finally {
      await c.close()
    }
  })

  test('big bodies (written without copying) arrive intact by push and by get', async () => {
    const q = uniqueName('big')
    await admin.declareQueue(q)
    const big = Buffer.alloc(40 * 1024)
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 0xff
    const c = await broker.connect()
    try {
      const got: Delivery[] = []
      await c.consume(q, {noAck: true, prefetch: 10}, (d) => got.push(d))
      for (let i = 0; i < 5; i++) await admin.publish('', q, big, {headers: {n: String(i)}})
      await sync(c)
      assert.equal(got.length, 5)
      for (const [i, d] of got.entries()) {
        assert.deepEqual(d.body, big)
        assert.equal(d.headers.n, String(i))
      }
    } finally {
      await c.close()
    }
    await admin.publish('', q, big)
    assert.deepEqual((await admin.get(q))?.body, big)
  })

  test('bodies stay byte-exact while the broker recycles its output buffers: a stalled consumer, heavy traffic, then a message stored before it all', async () => {
    const q = uniqueName('alias')
    const held = uniqueName('alias_held')
    await admin.declareQueue(q)
    await admin.declareQueue(held, {durable: true})
    const body = (i: number, size: number) => {
      const b = Buffer.alloc(size)
      for (let j = 0; j < size; j++) b[j] = (i * 31 + j * 7) & 0xff
      b.writeUInt32BE(i, 0)
      return b
    }
    const first = body(999_999, 40 * 1024)
    await admin.publish('', held, first)
    const c = await broker.connect()
    try {
      const got: Buffer[] = []
      await c.consume(q, {noAck: true, prefetch: 5000}, (d) => got.push(d.body))
      // the consumer stops reading: the broker's writes queue in its socket, each still holding its arena
      const sock = (c as unknown as {sock: net.Socket}).sock
      sock.pause()
      const n = 3000
      for (let i = 0; i < n; i += 500) {
        const sent = []
        for (let k = i; k < i + 500; k++) sent.push(admin.publish('', q, body(k, k % 5 === 0 ? 20 * 1024 : 4096)))
        await Promise.all(sent)
      }
      await new Promise((r) => setTimeout(r, 300))
      sock.resume()
      await waitFor(() => got.length === n, 30_000)
      for (let i = 0; i < n; i++) assert.ok(got[i].equals(body(i, i % 5 === 0 ? 20 * 1024 : 4096)), `delivery ${i} differs from what was published`)
    } finally {
      await c.close()
    }
    assert.ok((await admin.get(held))?.body.equals(first), 'the message stored before the traffic came back changed')
  })

  test('prefetch bounds unacked pushes; acks open the window; consumers share round-robin', async () => {
    const q = uniqueName('p')
    await admin.declareQueue(q)
    const c1 = await broker.connect()
    const c2 = await broker.connect()
    try {
      const got1: Delivery[] = []
      const got2: Delivery[] = []
      await c1.consume(q, {prefetch: 2}, (d) => got1.push(d))
      await c2.consume(q, {prefetch: 2}, (d) => got2.push(d))
      for (let i = 0; i < 10; i++) await admin.publish('', q, Buffer.from(`m${i}`))
      await sync(c1)
      await sync(c2)
      assert.equal(got1.length, 2)
      assert.equal(got2.length, 2)
      assert.deepEqual([got1[0], got2[0], got1[1], got2[1]].map((d) => d.body.toString()), ['m0', 'm1', 'm2', 'm3'])
      c1.ack(got1[0].deliveryTag)
      await sync(c1)
      assert.equal(got1.length, 3)
      const st = (await admin.listQueues()).find((x) => x.name === q)!
      assert.equal(st.messages, 5)
      assert.equal(st.unacked, 4)
      assert.equal(st.consumers, 2)
    } finally {
      await c1.close()
      await c2.close()
    }
  })

  test('a killed consumer\'s unacked messages are redelivered, flagged, with their delivery count', async () => {
    const q = uniqueName('k')
    await admin.declareQueue(q, {durable: true})
    for (let i = 0; i < 3; i++) await admin.publish('', q, Buffer.from(`job${i}`))
    // a separate consumer process that takes the messages and never acks, then gets SIGKILLed
    const script = `
      import {BrokerClient} from ${JSON.stringify(new URL('../../../src/lib/client/client.js', import.meta.url).href)}
      import {clientTlsOptions} from ${JSON.stringify(new URL('../../../src/lib/pki/index.js', import.meta.url).href)}
      import {MqHome} from ${JSON.stringify(new URL('../../../src/lib/config/home.js', import.meta.url).href)}
      const c = await BrokerClient.connect({host: '127.0.0.1', port: ${broker.port}, tls: {...clientTlsOptions(new MqHome(${JSON.stringify(broker.home)}), 'admin'), checkServerIdentity: () => undefined}})
      let n = 0
      await c.consume(${JSON.stringify(q)}, {prefetch: 10}, () => { if (++n === 3) console.log('got 3') })
    `
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {stdio: ['ignore', 'pipe', 'inherit']})
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => d.toString().includes('got 3') && resolve())
      child.once('exit', (code) => reject(new Error(`consumer exited early (${code})`)))
    })
    assert.equal((await admin.listQueues()).find((x) => x.name === q)!.unacked, 3)
    child.kill('SIGKILL')
    await waitFor(async () => (await admin.listQueues()).find((x) => x.name === q)!.messages === 3)
    const bodies: string[] = []
    for (let i = 0; i < 3; i++) {
      const d = (await admin.get(q))!
      assert.equal(d.redelivered, true)
      assert.equal(d.deliveryCount, 2)
      bodies.push(d.body.toString())
      admin.ack(d.deliveryTag)
    }
    assert.deepEqual(bodies, ['job0', 'job1', 'job2'])
  })

  test('after 20 deliveries a message moves to the dead-letter queue; reject dead-letters at once', async () => {
    const q = uniqueName('dl')
    await admin.declareQueue(q, {deadLetter: `${q}.dlq`})
    const {messageId} = await admin.publish('', q, Buffer.from('poison'))
    for (let i = 1; i <= 20; i++) {
      const d = await admin.get(q)
      assert.ok(d, `delivery ${i}`)
      assert.equal(d.deliveryCount, i)
      admin.nack(d.deliveryTag, true)
    }
    assert.equal(await admin.get(q), null)
    const dead = (await admin.get(`${q}.dlq`))!
    assert.equal(dead.messageId, messageId)
    assert.equal(dead.headers['x-death-reason'], 'delivery-limit')
    admin.ack(dead.deliveryTag)
    await admin.publish('', q, Buffer.from('bad'))
    const d = (await admin.get(q))!
    admin.reject(d.deliveryTag, 'schema mismatch')
    const r = (await admin.get(`${q}.dlq`))!
    assert.equal(r.headers['x-death-reason'], 'schema mismatch')
    assert.equal((await admin.messageStatus(r.messageId))?.status, 'delivered')
  })
})

describe('hostile clients', () => {
  const raw = (): Promise<tls.TLSSocket> =>
    new Promise((resolve, reject) => {
      const s = tls.connect({...clientTlsOptions(new MqHome(broker.home), 'admin'), checkServerIdentity: () => undefined, host: '127.0.0.1', port: broker.port}, () => resolve(s))
      s.once('error', reject)
    })
  const readUntilClose = (s: tls.TLSSocket) =>
    new Promise<string>((resolve) => {
      let out = ''
      s.on('data', (d: Buffer) => (out += d.toString('latin1')))
      s.on('error', () => {})
      s.on('close', () => resolve(out))
    })

  test('a malformed frame, an oversized frame and a slow-drip client are cut off while others carry on', async () => {
    const q = uniqueName('h')
    await admin.declareQueue(q)
    const bad = await raw()
    const big = await raw()
    const drip = await raw()
    const bodyDrip = await raw()
    const bodyDripOut = readUntilClose(bodyDrip)
    bodyDrip.write(`HELLO 1\nPUBLISH 2 exchange= key=${q} 1000\n`)
    const bodyDripper = setInterval(() => !bodyDrip.destroyed && bodyDrip.write('x'), 300)
    const badOut = readUntilClose(bad)
    const bigOut = readUntilClose(big)
    const dripOut = readUntilClose(drip)
    bad.write(Buffer.from([0, 1, 2, 0xff, 0x0a]))
    big.write(`HELLO 1\nPUBLISH 2 exchange= key=${q} ${MAX_PAYLOAD + 1}\n`)
    big.write(Buffer.alloc(1024, 1)) // the start of a body the broker must not buffer
    drip.write('HEL')
    const dripper = setInterval(() => !drip.destroyed && drip.write('L'), 300)
    // meanwhile a well-behaved client works normally
    const good = await broker.connect()
    try {
      for (let i = 0; i < 20; i++) await good.publish('', q, Buffer.from(`ok${i}`))
      const bo = await badOut
      assert.match(bo, /^ERR 0 code=E_FRAME_MALFORMED /m)
      const go = await bigOut
      assert.match(go, /^ERR 2 code=E_FRAME_TOO_LARGE /m)
      assert.doesNotMatch(go, /^OK 2/m)
      const dr = await dripOut
      assert.match(dr, /code=E_(HANDSHAKE|FRAME)_TIMEOUT/)
      assert.match(await bodyDripOut, /code=E_FRAME_TIMEOUT message=frame%20body/)
      assert.equal((await good.get(q))?.body.toString(), 'ok0')
      assert.equal((await good.listQueues()).find((x) => x.name === q)!.messages, 19)
    } finally {
      clearInterval(dripper)
      clearInterval(bodyDripper)
      await good.close()
    }
  })

  test('a bad argument is an error on that request only; the connection stays usable', async () => {
    const s = await raw()
    let out = ''
    s.on('data', (d: Buffer) => (out += d.toString()))
    s.write('HELLO 1\nDECLARE_QUEUE 2 name=has%20space\nNOSUCHVERB 3\nACK 5 tags=1-3,x\nACK 6 tags=1-99999999\nACK 7 tags=7-9\nPING 4\n')
    await waitFor(() => out.includes('PONG 4'))
    assert.match(out, /ERR 2 code=E_BAD_NAME/)
    assert.match(out, /ERR 3 code=E_UNKNOWN_VERB/)
    assert.match(out, /ERR 5 code=E_FRAME_ARG/)
    assert.match(out, /ERR 6 code=E_FRAME_ARG/)
    assert.match(out, /ERR 7 code=E_UNKNOWN_TAG/)
    s.destroy()
  })

  test('key directory names over the wire go through the one name check: PUT_KEY and GET_KEY of ../x are E_BAD_NAME', async () => {
    const s = await raw()
    let out = ''
    s.on('data', (d: Buffer) => (out += d.toString()))
    const body = JSON.stringify({encCertPem: 'x', signCertPem: 'y'})
    s.write(`HELLO 1\nPUT_KEY 2 name=../x ${Buffer.byteLength(body)}\n${body}GET_KEY 3 name=../../etc/passwd\nGET_KEY 4 name=a/b\nPING 5\n`)
    await waitFor(() => out.includes('PONG 5'))
    assert.match(out, /ERR 2 code=E_BAD_NAME/)
    assert.match(out, /ERR 3 code=E_BAD_NAME/)
    assert.match(out, /ERR 4 code=E_BAD_NAME/)
    s.destroy()
  })
})

describe('mutual TLS', () => {
  test('no client certificate: refused', async () => {
    const home = new MqHome(broker.home)
    const {ca} = clientTlsOptions(home, 'admin')
    const out = await new Promise<string>((resolve) => {
      const s = tls.connect({ca, checkServerIdentity: () => undefined, host: '127.0.0.1', port: broker.port})
      let o = ''
      s.on('data', (d: Buffer) => (o += d.toString()))
      s.on('secureConnect', () => s.write('HELLO 1\n'))
      s.on('error', (e) => resolve(`error: ${e.message}`))
      s.on('close', () => resolve(o))
    })
    assert.doesNotMatch(out, /^OK 1/m)
  })

  test('a revoked client is cut off live and refused afterwards', async () => {
    const home = new MqHome(broker.home)
    const {config} = loadConfig({home: broker.home})
    const ca = CertificateAuthority.open(home, config.pki)
    const name = uniqueName('mallory')
    await ca.issue(name, {type: 'client'})
    const c = await broker.connect(name)
    await c.declareQueue(`${name}.m`) // a queue of its own (IDENTITY.*)
    const closed = new Promise<void>((r) => c.once('close', () => r()))
    c.on('error', () => {})
    await ca.revoke(name)
    await closed
    await assert.rejects(broker.connect(name, {timeoutMs: 5000}), (e: {code?: string}) => e.code === 'E_TLS' || e.code === 'E_BROKER_CLOSED' || e.code === 'E_CERT_REVOKED')
    await admin.listQueues() // everyone else unaffected
  })

  test('only admin may delete or read stats by default', async () => {
    const {config} = loadConfig({home: broker.home})
    const ca = CertificateAuthority.open(new MqHome(broker.home), config.pki)
    const name = uniqueName('bob')
    await ca.issue(name, {type: 'client'})
    const c = await broker.connect(name)
    try {
      const q = `${name}.b`
      await c.declareQueue(q)
      await c.publish('', q, Buffer.from('x'))
      await assert.rejects(c.deleteQueue(q), {code: 'E_FORBIDDEN'})
      await assert.rejects(c.stats(), {code: 'E_FORBIDDEN'})
      assert.equal((await admin.deleteQueue(q)).messages, 1)
    } finally {
      await c.close()
    }
  })
})

describe('HTTPS API', () => {
  test('/health without a certificate; /metrics and /api need one', async () => {
    const home = new MqHome(broker.home)
    const opts = clientTlsOptions(home, 'admin')
    const get = (path: string, withCert: boolean) =>
      new Promise<{status: number; body: string}>((resolve, reject) => {
        import('node:https').then(({request}) => {
          const req = request({ca: opts.ca, checkServerIdentity: () => undefined, host: '127.0.0.1', path, port: broker.apiPort, ...(withCert ? {cert: opts.cert, key: opts.key} : {})}, (res) => {
            let b = ''
            res.on('data', (d) => (b += d))
            res.on('end', () => resolve({body: b, status: res.statusCode ?? 0}))
          })
          req.on('error', reject)
          req.end()
        })
      })
    const h = await get('/health', false)
    assert.equal(h.status, 200)
    assert.equal(JSON.parse(h.body).status, 'ok')
    assert.equal((await get('/metrics', false)).status, 401)
    const m = await get('/metrics', true)
    assert.equal(m.status, 200)
    assert.match(m.body, /mq_queue_messages\{queue="default_queue"\}/)
    const s = await get('/api/stats', true)
    assert.equal(s.status, 200)
    assert.ok(Array.isArray(JSON.parse(s.body).queues))
  })
})

describe('API plugins', () => {
  test('plugin routes are mounted with params, roles and identity; health and metrics merge', async () => {
    const home = new MqHome(broker.home)
    const {config} = loadConfig({home: broker.home})
    const {ApiServer} = await import('../../../src/lib/broker/api.js')
    const {Engine} = await import('../../../src/lib/broker/engine.js')
    const {resolvePermissions} = await import('../../../src/lib/broker/permissions.js')
    const {silentLogger} = await import('../../../src/lib/log.js')
    const {serverTlsOptions} = await import('../../../src/lib/pki/index.js')
    const seen: {identity: string | null; roles: string[]; id: string; body: string}[] = []
    const api = new ApiServer({
      connections: () => 0,
      engine: new Engine(),
      logger: silentLogger,
      maxBody: 1024,
      permissionsFor: (id) => resolvePermissions(config.broker.permissions, id),
      plugins: [
        {
          health: async () => ({ok: true, rows: 3}),
          metrics: async () => 'records_total 3',
          name: 'records',
          async routes(app) {
            app.post<{Params: {id: string}; Body: Buffer}>('/internal/messages/:id/status', {config: {roles: ['admin', 'worker']}}, async (req, reply) => {
              seen.push({body: req.body.toString(), id: req.params.id, identity: req.caller.identity, roles: req.caller.roles})
              return reply.code(201).send({ok: true})
            })
          },
        },
      ],
      tls: serverTlsOptions(home, 'broker'),
    })
    const port = await api.listen(0, '127.0.0.1')
    const ca = CertificateAuthority.open(home, config.pki)
    const plain = uniqueName('plain')
    await ca.issue(plain, {type: 'client'})
    const {request} = await import('node:https')
    const call = (method: string, path: string, identity?: string, body?: string) =>
      new Promise<{status: number; body: string}>((resolve, reject) => {
        const o = identity ? clientTlsOptions(home, identity) : {ca: clientTlsOptions(home, 'admin').ca}
        const req = request({...o, checkServerIdentity: () => undefined, host: '127.0.0.1', method, path, port}, (res) => {
          let b = ''
          res.on('data', (d) => (b += d))
          res.on('end', () => resolve({body: b, status: res.statusCode ?? 0}))
        })
        req.on('error', reject)
        req.end(body)
      })
    try {
      const ok = await call('POST', '/internal/messages/abc%20d/status', 'admin', '{"status":"delivered"}')
      assert.equal(ok.status, 201, ok.body)
      assert.deepEqual(seen, [{body: '{"status":"delivered"}', id: 'abc d', identity: 'admin', roles: ['admin', 'monitor']}])
      assert.equal((await call('POST', '/internal/messages/x/status', plain)).status, 403)
      assert.equal((await call('POST', '/internal/messages/x/status')).status, 401)
      assert.equal((await call('GET', '/internal/messages/x/status', 'admin')).status, 405)
      assert.equal((await call('POST', '/internal/messages/x/status', 'admin', 'x'.repeat(2048))).status, 413)
      // plugin details are for monitors; anonymous callers see the verdict alone
      const h = JSON.parse((await call('GET', '/health', 'admin')).body)
      assert.deepEqual(h.components.records, {ok: true, rows: 3, status: 'ok'})
      assert.deepEqual(JSON.parse((await call('GET', '/health')).body).components.records, {status: 'ok'})
      assert.match((await call('GET', '/metrics', 'admin')).body, /records_total 3/)
    } finally {
      await api.close()
    }
  })
})

describe('CipherMQ listener', () => {
  const session = async () => {
    const s = net.connect({host: '127.0.0.1', port: broker.ciphermqPort!})
    await new Promise((r) => s.once('connect', r))
    let buf = ''
    const lines: string[] = []
    s.setEncoding('utf8')
    s.on('data', (d: string) => {
      buf += d
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, i))
        buf = buf.slice(i + 1)
      }
    })
    let seen = 0
    const next = async () => {
      await waitFor(() => lines.length > seen)
      return lines[seen++]
    }
    const cmd = async (line: string) => {
      s.write(line + '\n')
      return next()
    }
    return {cmd, next, s}
  }

  test('answers each command exactly as CipherMQ does', async () => {
    const {cmd, next, s} = await session()
    const q = uniqueName('cq')
    const e = uniqueName('ce')
    const env = (id: string) => JSON.stringify({ciphertext: 'Y2lwaGVy', enc_session_key: 'a2V5', message_id: id, nonce: 'bm9uY2U=', tag: 'dGFn'})
    assert.equal(await cmd(`declare_queue ${q}`), 'Queue declared')
    assert.equal(await cmd(`declare_exchange ${e}`), 'Exchange declared')
    assert.equal(await cmd(`bind ${q} ${e} rk`), 'Queue bound')
    assert.equal(await cmd(`publish ${e} rk ${env('id-1')}`), 'ACK id-1')
    assert.match(await cmd(`publish ${e} nowhere ${env('id-x')}`), /^Error: /)
    assert.match(await cmd(`publish ${e} rk {not json`), /^Error: /)
    s.write(`publish_batch ${e} rk [${env('id-2')},${env('id-3')}]\n`)
    assert.equal(await next(), 'ACK id-2')
    assert.equal(await next(), 'ACK id-3')
    assert.equal(await cmd(`fetch ${q}`), `Message: id-1 ${env('id-1')}`)
    assert.equal(await cmd('ack id-1'), 'ACK_CONFIRMED id-1')
    assert.equal(await cmd(`consume ${q}`), 'Subscribed to queue')
    assert.equal(await next(), `Message: id-2 ${env('id-2')}`)
    assert.equal(await next(), `Message: id-3 ${env('id-3')}`)
    assert.equal(await cmd('ack id-2'), 'ACK_CONFIRMED id-2')
    // stats need the monitor right, which CipherMQ clients do not have by default
    assert.match(await cmd('stats'), /^Error: not allowed to read stats/)
    assert.equal(await cmd('frobnicate now'), 'Unknown command')
    assert.equal(await cmd(`fetch ${uniqueName('empty')}`).then((l) => l.startsWith('Error: ')), true)
    await cmd(`declare_queue ${q}.empty`)
    assert.equal(await cmd(`fetch ${q}.empty`), 'No messages')
    s.destroy()
    assert.equal((await admin.messageStatus('id-2'))?.status, 'acknowledged')
  })
})
