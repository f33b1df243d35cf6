import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'

import {Redis} from 'ioredis'

import type {BrokerClient, Delivery} from '../../../src/lib/broker/client.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {ApiClient} from '../../../src/lib/http/client.js'
import {CertificateAuthority, clientTlsOptions} from '../../../src/lib/pki/index.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {tempHome} from '../../helpers/home.js'
import {privateMariadb} from '../../helpers/pipeline.js'
import {REDIS_URL, freePort, uniqueName, waitFor} from '../../helpers/services.js'
import {spawnMq} from './spawn.js'

describe('ingest pipeline: a MySQL outage while messages flow loses none and duplicates none', () => {
  const h = tempHome('mq-pipe-db-')
  const home = new MqHome(h.dir)
  const prefix = uniqueName('mqpipedb') + ':'
  let db: Awaited<ReturnType<typeof privateMariadb>>
  let broker: BrokerProcess
  let procs: Awaited<ReturnType<typeof spawnMq>>[] = []
  let consumer: BrokerClient
  let client: ApiClient
  const received: {id: string; redelivered: boolean}[] = []

  before(async () => {
    db = await privateMariadb()
    const env = {MQ_REDIS_KEY_PREFIX: prefix, MQ_REDIS_URL: REDIS_URL, MQ_STORE_URL: db.url}
    broker = await spawnBroker({env, home: h.dir})
    await CertificateAuthority.open(home, defaultConfig().pki).ensureDevelopment({clients: ['alice', 'proxy', 'worker'], servers: ['proxy-server']})
    const penv = {...env, MQ_CLIENT_API: `https://127.0.0.1:${broker.apiPort}`, MQ_HOME: h.dir}
    const proxyPort = await freePort()
    procs.push(await spawnMq(['proxy', 'start', '--port', String(proxyPort), '--rate', '0'], penv, 'proxy ready'))
    procs.push(await spawnMq(['worker', 'start', '--metrics-port', '0', '--retry-delay', '200', '--routing-key', 'dbout'], penv, 'worker ready'))
    consumer = await broker.connect('admin')
    await consumer.declareQueue('dbout', {durable: true})
    await consumer.bind('dbout', 'default_exchange', 'dbout')
    await consumer.consume('dbout', {prefetch: 100}, (d: Delivery) => {
      received.push({id: d.messageId, redelivered: d.redelivered})
      consumer.ack(d.deliveryTag)
    })
    client = new ApiClient(`https://127.0.0.1:${proxyPort}`, clientTlsOptions(home, 'alice'), 5000)
  })

  after(async () => {
    client?.close()
    await consumer?.close().catch(() => {})
    for (const p of procs) await p.stop('SIGKILL')
    await broker?.stop()
    const r = new Redis(REDIS_URL)
    const keys = await r.keys(prefix + '*')
    if (keys.length) await r.del(...keys)
    r.disconnect()
    await db?.destroy()
    h.cleanup()
  })

  it('proxies answer 503 while the database is down; retried sends and queued deliveries all arrive once', async () => {
    let refused = 0
    const send = async (n: number) => {
      for (;;) {
        const r = await client.request<{message_id: string}>('POST', '/api/v1/messages', {message_body: `db outage ${n}`, sender_number: '+4915200000000'}, {'idempotency-key': `db-${n}`}).catch(() => ({body: {message_id: ''}, status: 0}))
        if (r.status === 202) return r.body.message_id
        if (r.status === 503) refused++
        await new Promise((res) => setTimeout(res, 100))
      }
    }
    const N = 30
    const ids: Promise<string>[] = []
    for (let i = 0; i < N; i++) {
      ids.push(send(i))
      await new Promise((r) => setTimeout(r, 20))
      if (i === 10) await db.stop()
      if (i === 20) {
        await new Promise((r) => setTimeout(r, 2000))
        await db.start()
      }
    }
    const all = await Promise.all(ids)
    assert.equal(new Set(all).size, N)
    assert.ok(refused > 0, 'no request was refused while MySQL was down')
    await waitFor(() => all.every((id) => received.some((m) => m.id === id)), 60_000, 100)
    await new Promise((r) => setTimeout(r, 500))
    for (const id of all) assert.equal(received.filter((m) => m.id === id && !m.redelivered).length, 1, `message ${id}`)
    const mysql = await import('mysql2/promise')
    const c = await mysql.createConnection(db.url)
    try {
      const [rows] = (await c.query("SELECT COUNT(*) AS n FROM messages WHERE status = 'delivered'")) as [{n: number}[], unknown]
      assert.equal(Number(rows[0].n), N)
    } finally {
      await c.end()
    }
  })
})
