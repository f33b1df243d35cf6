/**
 * The broker is killed (-9) after it has published a delivery into a durable queue and before it
 * has marked the record delivered: the worker's retry after the restart must be recognised, not
 * published a second time. The window is held open without any test hook: the test locks the
 * message's row in MySQL (SELECT ... FOR UPDATE), so the broker's "delivered" UPDATE waits on it;
 * once that UPDATE shows in information_schema, the publish has been committed (the plugin
 * marks only after the publish resolved, which is after its group commit).
 */
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
import {REDIS_URL, freePort, tempMysqlDatabase, uniqueName, waitFor} from '../../helpers/services.js'
import {spawnMq} from './spawn.js'

describe('ingest pipeline: a broker killed between publishing a delivery and recording it publishes it once', () => {
  const h = tempHome('mq-pipe-crash-')
  const home = new MqHome(h.dir)
  const prefix = uniqueName('mqpipecrash') + ':'
  let db: Awaited<ReturnType<typeof tempMysqlDatabase>>
  let broker: BrokerProcess
  let env: NodeJS.ProcessEnv
  const procs: Awaited<ReturnType<typeof spawnMq>>[] = []
  let client: ApiClient
  let admin: BrokerClient | undefined

  before(async () => {
    db = await tempMysqlDatabase()
    const brokerEnv = {MQ_REDIS_KEY_PREFIX: prefix, MQ_REDIS_URL: REDIS_URL, MQ_STORE_URL: db.url}
    broker = await spawnBroker({env: brokerEnv, home: h.dir})
    await CertificateAuthority.open(home, defaultConfig().pki).ensureDevelopment({clients: ['alice', 'proxy', 'worker'], servers: ['proxy-server']})
    env = {...brokerEnv, MQ_CLIENT_API: `https://127.0.0.1:${broker.apiPort}`, MQ_HOME: h.dir}
    const proxyPort = await freePort()
    procs.push(await spawnMq(['proxy', 'start', '--port', String(proxyPort), '--rate', '0'], env, 'proxy ready'))
    client = new ApiClient(`https://127.0.0.1:${proxyPort}`, clientTlsOptions(home, 'alice'), 5000)
    const c = await broker.connect('admin')
    await c.declareQueue('crashq', {durable: true})
    await c.bind('crashq', 'default_exchange', 'crash')
    await c.close()
  })

  after(async () => {
    client?.close()
    await admin?.close().catch(() => {})
    for (const p of procs) await p.stop('SIGKILL')
    await broker?.stop()
    const r = new Redis(REDIS_URL)
    const keys = await r.keys(prefix + '*')
    if (keys.length) await r.del(...keys)
    r.disconnect()
    await db?.drop()
    h.cleanup()
  })

  it('kill -9 after the publish, restart, the worker retries: the queue holds one copy, the consumer gets it once, the row is delivered', async () => {
    const sent = await client.request<{message_id: string}>('POST', '/api/v1/messages', {message_body: 'published before the crash', sender_number: '+4915200000000'})
    assert.equal(sent.status, 202, JSON.stringify(sent.body))
    const id = sent.body.message_id

    const mysql = await import('mysql2/promise')
    const locker = await mysql.createConnection(db.url)
    const conn = await mysql.createConnection(db.url)
    try {
      const status = async () => ((await conn.query('SELECT status FROM messages WHERE message_id = ?', [id])) as [{status: string}[], unknown])[0][0].status
      await locker.beginTransaction()
      await locker.query('SELECT message_id FROM messages WHERE message_id = ? FOR UPDATE', [id])
      // the worker starts only now, so its first delivery meets the lock
      procs.push(await spawnMq(['worker', 'start', '--metrics-port', '0', '--retry-delay', '200ms', '--routing-key', 'crash'], env, 'worker ready'))
      // the broker's "delivered" UPDATE, stuck behind our lock (MariaDB lists the statement, not always the waiting trx)
      const markWaiting = async () => {
        const [rows] = (await conn.query("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ? AND INFO LIKE 'UPDATE messages SET status = ''delivered''%'", [db.name])) as [{n: number}[], unknown]
        return Number(rows[0].n) > 0
      }
      await waitFor(markWaiting, 30_000, 50)
      await broker.kill9()
      await locker.rollback()
      assert.notEqual(await status(), 'delivered', 'the record must still be unmarked when the broker dies')

      await broker.restart()
      await waitFor(async () => (await status()) === 'delivered', 60_000, 100)
      admin = await broker.connect('admin')
      const q = (await admin.listQueues()).find((x) => x.name === 'crashq')!
      assert.equal(q.messages, 1, `crashq holds ${q.messages} copies of the message`)
      // the restarted broker recognised the retry (the counter is per broker process)
      const api = new ApiClient(`https://127.0.0.1:${broker.apiPort}`, clientTlsOptions(home, 'admin'), 5000)
      try {
        const metrics = await api.request<string>('GET', '/metrics')
        assert.match(String(metrics.body), /^mq_records_publish_duplicates_total 1$/m)
      } finally {
        api.close()
      }

      const received: Delivery[] = []
      await admin.consume('crashq', {prefetch: 10}, (d) => {
        received.push(d)
        admin!.ack(d.deliveryTag)
      })
      await waitFor(() => received.length > 0, 20_000)
      // nothing else may follow (a second copy would be dispatched right behind the first)
      await new Promise((r) => setTimeout(r, 500))
      assert.deepEqual(received.map((d) => [d.messageId, d.redelivered]), [[id, false]])
      assert.equal(JSON.parse(received[0].body.toString()).message_body, 'published before the crash')
    } finally {
      await locker.end().catch(() => {})
      await conn.end()
    }
  })
})
