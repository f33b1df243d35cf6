import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'

import {Redis} from 'ioredis'

import type {BrokerClient, Delivery} from '../../../src/lib/client/client.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {ApiClient} from '../../../src/lib/http/client.js'
import {CertificateAuthority, clientTlsOptions} from '../../../src/lib/pki/index.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {tempHome} from '../../helpers/home.js'
import {privateMariadb} from '../../helpers/pipeline.js'
import {REDIS_URL, freePort, uniqueName, waitFor} from '../../helpers/services.js'
import {sleep, steadySenders} from './flow.js'
import {spawnMq} from './spawn.js'

const OUTAGE_MS = Number(process.env.MQ_TEST_OUTAGE_MS ?? 30_000)

/**
 * Issue 5, done means: stopping MySQL for 30 s while messages flow loses none and duplicates none.
 * Clients keep sending during the whole outage; MQ_TEST_OUTAGE_MS shortens it for local iteration only.
 */
describe('ingest pipeline: MySQL stopped for 30 s while messages flow loses none and duplicates none', () => {
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
    procs.push(await spawnMq(['worker', 'start', '--metrics-port', '0', '--retry-delay', '200ms', '--routing-key', 'dbout'], penv, 'worker ready'))
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

  it(`clients keep sending through a ${OUTAGE_MS / 1000} s MySQL outage: 503 while it is down, then every accepted message arrives exactly once, every row delivered`, async (t) => {
    const senders = steadySenders(client, {everyMs: 500, retryMs: 500, tag: 'db'})
    senders.start()
    await waitFor(() => senders.acceptedCount >= 4, 30_000, 50)
    // a burst right before the stop: some are accepted and wait in Redis, the worker retries them
    senders.burst(20)
    await db.stop()
    const startedBefore = senders.started
    const refusedBefore = senders.refusals.length
    await sleep(OUTAGE_MS)
    const duringOutage = senders.refusals.slice(refusedBefore)
    const sentDuring = senders.started - startedBefore
    await db.start()
    const acceptedAtRestart = senders.acceptedCount
    await waitFor(() => senders.acceptedCount >= acceptedAtRestart + 4, 60_000, 50)
    senders.stop()
    const ids = await Promise.all(senders.accepted)

    assert.ok(sentDuring >= OUTAGE_MS / 1000, `only ${sentDuring} new messages were sent during the outage`)
    assert.ok(duringOutage.length > 0, 'nothing was refused while MySQL was down')
    assert.deepEqual([...new Set(duringOutage.map((r) => `${r.status} ${r.code} retry-after=${r.retryAfter}`))], ['503 E_BROKER_UNAVAILABLE retry-after=1'])
    t.diagnostic(`${duringOutage.length} refusals during the outage; slowest 503 took ${Math.max(...duringOutage.map((r) => r.ms)).toFixed(1)} ms`)
    assert.equal(ids.length, senders.started)
    assert.equal(new Set(ids).size, ids.length, 'two requests were accepted as one message')

    await waitFor(() => ids.every((id) => received.some((m) => m.id === id)), 90_000, 100)
    await sleep(500)
    // the broker stayed up: no redelivery either, every message exactly once
    for (const id of ids) assert.equal(received.filter((m) => m.id === id).length, 1, `message ${id}`)
    const mysql = await import('mysql2/promise')
    const c = await mysql.createConnection(db.url)
    try {
      await waitFor(async () => {
        const [rows] = (await c.query("SELECT COUNT(*) AS n FROM messages WHERE status = 'delivered'")) as [{n: number}[], unknown]
        return Number(rows[0].n) === ids.length
      }, 30_000, 100)
      const [rows] = (await c.query('SELECT COUNT(*) AS n FROM messages')) as [{n: number}[], unknown]
      assert.equal(Number(rows[0].n), ids.length, 'a record no client was told about')
    } finally {
      await c.end()
    }
  })
})
