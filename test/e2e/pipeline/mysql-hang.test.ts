/**
 * Issue 18, failure 4: MariaDB SIGSTOPped (hung, connections open) while clients send. The proxy
 * answers 503 at its deadline; the registrations it gave up on are committed when MariaDB resumes.
 * Those requests were not accepted: their records must end failed (E_NOT_ACCEPTED) and never be
 * delivered, every accepted one must be delivered once, and no record may stay queued.
 */
import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'

import type {BrokerClient, Delivery} from '../../../src/lib/client/client.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {ApiClient} from '../../../src/lib/http/client.js'
import {CertificateAuthority, clientTlsOptions} from '../../../src/lib/pki/index.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {tempHome} from '../../helpers/home.js'
import {privateMariadb, privateRedis} from '../../helpers/pipeline.js'
import {freePort, waitFor} from '../../helpers/services.js'
import {sleep} from './flow.js'
import {spawnMq} from './spawn.js'

describe('MariaDB hung (SIGSTOP) while clients send: refused requests end failed, accepted ones delivered once, none stays queued', () => {
  const h = tempHome('mq-pipe-hang-')
  const home = new MqHome(h.dir)
  let db: Awaited<ReturnType<typeof privateMariadb>>
  let redis: Awaited<ReturnType<typeof privateRedis>>
  let broker: BrokerProcess
  const procs: Awaited<ReturnType<typeof spawnMq>>[] = []
  let consumer: BrokerClient
  let client: ApiClient
  const received: {id: string; body: string}[] = []

  before(async () => {
    ;[db, redis] = await Promise.all([privateMariadb(), privateRedis()])
    const brokerEnv = {MQ_REDIS_KEY_PREFIX: 'hang:', MQ_REDIS_URL: redis.url, MQ_STORE_URL: db.url}
    broker = await spawnBroker({env: brokerEnv, home: h.dir})
    await CertificateAuthority.open(home, defaultConfig().pki).ensureDevelopment({clients: ['alice', 'proxy', 'worker'], servers: ['proxy-server']})
    const env = {...brokerEnv, MQ_CLIENT_API: `https://127.0.0.1:${broker.apiPort}`, MQ_HOME: h.dir, MQ_WORKER_RECONCILE_AFTER: '1s', MQ_WORKER_RECONCILE_INTERVAL: '250ms'}
    const proxyPort = await freePort()
    procs.push(await spawnMq(['proxy', 'start', '--port', String(proxyPort), '--rate', '0'], env, 'proxy ready'))
    procs.push(await spawnMq(['worker', 'start', '--metrics-port', '0', '--retry-delay', '200ms', '--routing-key', 'hang'], env, 'worker ready'))
    consumer = await broker.connect('admin')
    await consumer.declareQueue('hang', {durable: true})
    await consumer.bind('hang', 'default_exchange', 'hang')
    await consumer.consume('hang', {prefetch: 100}, (d: Delivery) => {
      received.push({body: (JSON.parse(d.body.toString()) as {message_body: string}).message_body, id: d.messageId})
      consumer.ack(d.deliveryTag)
    })
    client = new ApiClient(`https://127.0.0.1:${proxyPort}`, clientTlsOptions(home, 'alice'), 5000)
  })

  after(async () => {
    client?.close()
    await consumer?.close().catch(() => {})
    db?.signal('SIGCONT')
    for (const p of procs) await p.stop('SIGKILL')
    await broker?.stop()
    await redis?.destroy()
    await db?.destroy()
    h.cleanup()
  })

  it('requests answered 503 during the hang are recorded failed when MariaDB resumes; the accepted are delivered once', async (t) => {
    // clients without an Idempotency-Key: each request is a new message, never retried
    const answers = new Map<string, {status: number; id?: string}>()
    let stop = false
    let k = 0
    const sender = async () => {
      while (!stop) {
        const body = `hang ${k++}`
        const r = await client
          .request<{message_id?: string}>('POST', '/api/v1/messages', {message_body: body, sender_number: '+4915200000000'})
          .catch(() => ({body: {} as {message_id?: string}, status: 0}))
        answers.set(body, {id: r.body?.message_id, status: r.status})
        await sleep(20)
      }
    }
    const senders = [sender(), sender(), sender(), sender()]
    await sleep(1000)
    db.signal('SIGSTOP')
    await sleep(4000)
    db.signal('SIGCONT')
    await sleep(1500)
    stop = true
    await Promise.all(senders)

    const accepted = [...answers].filter(([, a]) => a.status === 202)
    const refused = [...answers].filter(([, a]) => a.status !== 202)
    t.diagnostic(`${accepted.length} accepted, ${refused.length} refused (${[...new Set(refused.map(([, a]) => a.status))].join(', ')})`)
    assert.ok(refused.length > 0, 'nothing was refused while MariaDB was hung')
    assert.ok(refused.every(([, a]) => a.status === 503))

    await waitFor(() => accepted.every(([, a]) => received.some((m) => m.id === a.id)), 30_000, 100)
    // longer than reconcile_after plus a pass: a record left queued would be delivered by now
    await sleep(2500)
    const bodies = received.map((m) => m.body).sort()
    assert.deepEqual(bodies, accepted.map(([b]) => b).sort(), 'the consumer got a message whose request was refused, or one twice')

    const mysql = await import('mysql2/promise')
    const c = await mysql.createConnection(db.url)
    try {
      const [rows] = (await c.query('SELECT status, last_error FROM messages')) as [{status: string; last_error: string | null}[], unknown]
      const by = (s: string) => rows.filter((r) => r.status === s)
      t.diagnostic(`records: ${by('delivered').length} delivered, ${by('failed').length} failed, ${by('queued').length} queued`)
      assert.equal(by('queued').length + by('processing').length, 0, 'records stuck queued')
      assert.equal(by('delivered').length, accepted.length)
      // the hang left records of refused requests: all failed as not accepted
      assert.ok(by('failed').length > 0, 'the hang produced no late registration')
      for (const r of by('failed')) assert.match(r.last_error ?? '', /^E_NOT_ACCEPTED: /)
      assert.equal(rows.length, accepted.length + by('failed').length)
    } finally {
      await c.end()
    }
  })
})
