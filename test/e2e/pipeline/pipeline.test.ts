import assert from 'node:assert/strict'
import {execFile} from 'node:child_process'
import {after, before, describe, it} from 'node:test'
import {promisify} from 'node:util'

import {Redis} from 'ioredis'

import type {BrokerClient, Delivery} from '../../../src/lib/client/client.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {CertificateAuthority} from '../../../src/lib/pki/index.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {spawnMq} from './spawn.js'
import {tempHome} from '../../helpers/home.js'
import {MYSQL_URL, REDIS_URL, freePort, tempMysqlDatabase, uniqueName, waitFor} from '../../helpers/services.js'

const run = promisify(execFile)

describe('ingest pipeline end to end: curl -> proxy -> Redis -> worker -> broker -> consumer, records in MySQL', () => {
  const h = tempHome('mq-pipe-')
  const prefix = uniqueName('mqpipe') + ':'
  let db: Awaited<ReturnType<typeof tempMysqlDatabase>>
  let broker: BrokerProcess
  let proxy: Awaited<ReturnType<typeof spawnMq>>
  let worker: Awaited<ReturnType<typeof spawnMq>>
  let proxyPort: number
  let env: NodeJS.ProcessEnv
  let consumer: BrokerClient
  let redis: Redis
  const home = new MqHome(h.dir)
  let firstId = ''
  const received: {id: string; body: Record<string, unknown>; redelivered: boolean}[] = []

  const curl = async (body: string, identity = 'alice', extra: string[] = []) => {
    const {stdout} = await run('curl', ['-sS', '-w', '\n%{http_code}', '--cert', home.issuedCert(identity), '--key', home.issuedKey(identity), '--cacert', home.caCert, '-H', 'Content-Type: application/json', ...extra, '-d', body, `https://127.0.0.1:${proxyPort}/api/v1/messages`])
    const i = stdout.lastIndexOf('\n')
    return {body: JSON.parse(stdout.slice(0, i)), status: Number(stdout.slice(i + 1))}
  }
  /** A client that retries until accepted, with an Idempotency-Key, as a careful client would. */
  const sendReliably = async (n: number, text: string) => {
    for (;;) {
      const r = await curl(JSON.stringify({message_body: text, sender_number: '+4915200000000'}), 'alice', ['-H', `Idempotency-Key: k-${n}`]).catch(() => ({body: {}, status: 0}))
      if (r.status === 202) return r.body.message_id as string
      await new Promise((res) => setTimeout(res, 100))
    }
  }
  const startWorker = (extra: string[] = [], retryDelay = 200) =>
    spawnMq(['worker', 'start', '--home', h.dir, '--metrics-port', '0', '--retry-delay', `${retryDelay}ms`, '--routing-key', 'pipeline', ...extra], env, 'worker ready')
  const onDelivery = (d: Delivery) => {
    received.push({body: JSON.parse(d.body.toString()), id: d.messageId, redelivered: d.redelivered})
    consumer.ack(d.deliveryTag)
  }
  /** publishes into the queue per message id; a broker redelivery of an unacknowledged copy is not a second publish */
  const published = (id: string) => received.filter((m) => m.id === id && !m.redelivered).length

  before(async () => {
    db = await tempMysqlDatabase()
    const apiEnv = {MQ_REDIS_KEY_PREFIX: prefix, MQ_REDIS_URL: REDIS_URL, MQ_STORE_URL: db.url}
    broker = await spawnBroker({env: apiEnv, home: h.dir})
    env = {...apiEnv, MQ_CLIENT_API: `https://127.0.0.1:${broker.apiPort}`, MQ_HOME: h.dir, MQ_WORKER_CLAIM_IDLE_MS: '1000'}
    const ca = CertificateAuthority.open(home, defaultConfig().pki)
    await ca.ensureDevelopment({clients: ['alice', 'carol', 'proxy', 'worker'], servers: ['proxy-server']})
    proxyPort = await freePort()
    proxy = await spawnMq(['proxy', 'start', '--home', h.dir, '--port', String(proxyPort), '--rate', '0'], env, 'proxy ready')
    worker = await startWorker()
    consumer = await broker.connect('admin')
    await consumer.declareQueue('inbox', {durable: true})
    await consumer.bind('inbox', 'default_exchange', 'pipeline')
    await consumer.consume('inbox', {prefetch: 100}, onDelivery)
    redis = new Redis(REDIS_URL)
  })

  after(async () => {
    await consumer?.close().catch(() => {})
    await worker?.stop('SIGKILL')
    await proxy?.stop('SIGKILL')
    await broker?.stop()
    const keys = await redis.keys(prefix + '*')
    if (keys.length) await redis.del(...keys)
    redis.disconnect()
    await db?.drop()
    h.cleanup()
  })

  it('curl with a client certificate gets 202; the consumer receives it; MySQL has it delivered, hashed, sealed', async () => {
    const secret = 'Pipeline body with a secret 8472'
    const r = await curl(JSON.stringify({message_body: secret, metadata: {ticket: 'T-55511'}, sender_number: '+4915299887766'}))
    assert.equal(r.status, 202, JSON.stringify(r.body))
    const id = r.body.message_id
    firstId = id
    await waitFor(() => received.some((m) => m.id === id), 20_000)
    const got = received.find((m) => m.id === id)!
    assert.equal(got.body.message_body, secret)
    assert.equal(got.body.sender_number, '+4915299887766')
    assert.equal(got.body.client_id, 'alice')
    const mysql = await import('mysql2/promise')
    const conn = await mysql.createConnection(db.url)
    try {
      const row = async () => ((await conn.query('SELECT status, sender_hash, sender_masked, client_id, attempts FROM messages WHERE message_id = ?', [id])) as [Record<string, unknown>[], unknown])[0]
      // the broker publishes, then records the delivery: the consumer may be a moment ahead
      await waitFor(async () => (await row())[0].status === 'delivered', 10_000, 50)
      const rows = await row()
      assert.match(String(rows[0].sender_hash), /^[0-9a-f]{64}$/)
      assert.equal(rows[0].sender_masked, '+4915****7766')
    } finally {
      await conn.end()
    }
    const u = new URL(MYSQL_URL)
    const {stdout: dump} = await run('mysqldump', ['-h', u.hostname, '-P', u.port || '3306', '-u', u.username || 'root', ...(u.password ? [`-p${u.password}`] : []), '--hex-blob', db.name], {maxBuffer: 64 * 1024 * 1024})
    const {stdout: rawDump} = await run('mysqldump', ['-h', u.hostname, '-P', u.port || '3306', '-u', u.username || 'root', ...(u.password ? [`-p${u.password}`] : []), db.name], {encoding: 'latin1', maxBuffer: 64 * 1024 * 1024})
    assert.ok(dump.includes(id))
    for (const s of ['secret 8472', '15299887766', 'T-55511']) {
      assert.equal(dump.includes(s), false, `${s} in the MySQL dump`)
      assert.equal(rawDump.includes(s), false, `${s} in the raw MySQL dump`)
    }
    for (const k of await redis.keys(prefix + '*')) {
      const v = (await redis.dumpBuffer(k)) ?? Buffer.alloc(0)
      for (const s of ['secret 8472', '15299887766', 'T-55511']) assert.equal(v.includes(s), false, `${s} in Redis key ${k}`)
    }
  })

  it('mq recv (plain format) receives an ingested message', async () => {
    await consumer.declareQueue('recvq', {durable: true})
    await consumer.bind('recvq', 'default_exchange', 'pipeline')
    // admin's end-to-end identity comes with the broker's first start
    const r = await curl(JSON.stringify({message_body: 'for mq recv', sender_number: '+4915200000000'}))
    assert.equal(r.status, 202)
    const got = await runCli(['recv', '-q', 'recvq', '--accept', 'plain', '--timeout', '20s'], {env: {...env, ...broker.cliEnv()}})
    assert.equal(got.code, 0, got.stderr)
    const m = JSON.parse(got.stdout)
    assert.equal(m.message_id, r.body.message_id)
    assert.equal(m.message_body, 'for mq recv')
    await consumer.deleteQueue('recvq')
  })

  it('a pipeline message mq recv refuses (default --accept native) is kept in the dead-letter queue, and message status, message list and stats agree', async () => {
    await consumer.declareQueue('strict', {durable: true})
    await consumer.bind('strict', 'default_exchange', 'pipeline')
    const before = JSON.parse((await runCli(['stats', '--json'], {env: {...env, ...broker.cliEnv()}})).stdout).totals.dead_lettered
    const r = await curl(JSON.stringify({message_body: 'refused by a strict receiver', sender_number: '+4915200000000'}))
    assert.equal(r.status, 202)
    const id = r.body.message_id as string
    await waitFor(() => received.some((m) => m.id === id), 20_000)
    const got = await runCli(['recv', '-q', 'strict', '--timeout', '3s'], {env: {...env, ...broker.cliEnv()}})
    assert.equal(got.code, 65, got.stderr)
    const st = JSON.parse((await runCli(['message', 'status', id, '--json'], {env: {...env, ...broker.cliEnv()}})).stdout)
    assert.deepEqual([st.status, st.queue], ['dead-lettered', 'strict.dlq'])
    const list = JSON.parse((await runCli(['message', 'list', '--client', 'alice', '--json'], {env})).stdout) as {message_id: string; status: string; broker_status: string; queue?: string}[]
    const row = list.find((m) => m.message_id === id)!
    assert.deepEqual([row.status, row.broker_status, row.queue], ['dead-lettered', 'dead-lettered', 'strict.dlq'])
    const stats = JSON.parse((await runCli(['stats', '--json'], {env: {...env, ...broker.cliEnv()}})).stdout)
    assert.equal(stats.totals.dead_lettered, before + 1)
    assert.equal(stats.queues.find((q: {name: string}) => q.name === 'strict.dlq').messages, 1)
    await consumer.deleteQueue('strict')
  })

  it('operator commands see the record, decrypt it with an audit entry, and count it', async () => {
    const cli = (args: string[]) => runCli([...args, '--json'], {env})
    const list = await cli(['message', 'list', '--client', 'alice', '--status', 'delivered'])
    assert.equal(list.code, 0, list.stderr)
    const rows = JSON.parse(list.stdout)
    assert.ok(rows.length >= 1)
    assert.equal(list.stdout.includes('8472'), false)
    assert.ok(rows.some((r: {message_id: string}) => r.message_id === firstId))
    const view = await cli(['message', 'view', firstId, '--decrypt'])
    assert.equal(view.code, 0, view.stderr)
    assert.match(JSON.parse(view.stdout).message_body, /secret 8472/)
    const stats = JSON.parse((await cli(['stats', 'records'])).stdout)
    assert.ok(stats.messages.delivered >= 1)
    assert.ok(stats.clients.active >= 3)
    const denied = await runCli(['message', 'list', '--identity', 'alice', '--json'], {env})
    assert.equal(denied.code, 77, denied.stdout)
  })

  // a 30 s broker outage while messages flow: broker-outage.test.ts (its own file, so it runs alongside this one)

  it('a worker killed mid-batch loses nothing: another worker reclaims its entries', async () => {
    await worker.stop('SIGKILL')
    const slow = await startWorker(['--concurrency', '64', '--name', 'doomed'])
    const ids = await Promise.all(Array.from({length: 40}, (_, i) => sendReliably(1000 + i, `kill test ${i}`)))
    await slow.stop('SIGKILL')
    worker = await startWorker(['--name', 'survivor'])
    await waitFor(() => ids.every((id) => received.some((m) => m.id === id)), 60_000, 100)
    await new Promise((r) => setTimeout(r, 500))
    for (const id of ids) assert.equal(published(id), 1)
    // the dead worker's unacknowledged entries are reclaimed and settled (as duplicates the broker ignores)
    await waitFor(async () => Number(((await redis.xpending(`${prefix}ingest`, 'workers')) as [number])[0]) === 0, 30_000, 100)
    assert.equal(await redis.xlen(`${prefix}ingest`), 0)
  })

  it('mq client revoke: the CA revokes, the proxy refuses the certificate within seconds, the records show it', async () => {
    const ok = await curl(JSON.stringify({message_body: 'before revocation', sender_number: '+4915200000000'}), 'carol')
    assert.equal(ok.status, 202)
    const r = await runCli(['client', 'revoke', 'carol', '--reason', 'key-compromise', '--json'], {env})
    assert.equal(r.code, 0, r.stderr + r.stdout)
    assert.equal(JSON.parse(r.stdout).revoked[0].identity, 'carol')
    await waitFor(async () => (await curl(JSON.stringify({message_body: 'after', sender_number: '+4915200000000'}), 'carol').then(() => false, () => true)), 15_000, 200)
    const list = JSON.parse((await runCli(['client', 'list', '--status', 'revoked', '--json'], {env})).stdout)
    assert.ok(list.some((c: {identity: string; reason: string}) => c.identity === 'carol' && c.reason === 'key-compromise'))
  })

  it('a message that always fails is dead-lettered after the configured attempts and marked failed', async () => {
    await worker.stop()
    const failing = await startWorker(['--exchange', 'no_such_exchange', '--max-attempts', '3'], 100)
    try {
      const r = await curl(JSON.stringify({message_body: 'undeliverable', sender_number: '+4915200000000'}))
      assert.equal(r.status, 202)
      await waitFor(async () => (await redis.xlen(`${prefix}ingest:dead`)) === 1, 30_000, 100)
      const [[, f]] = await redis.xrange(`${prefix}ingest:dead`, '-', '+')
      assert.equal(f[1], r.body.message_id)
      const view = await runCli(['message', 'view', r.body.message_id, '--json'], {env})
      const m = JSON.parse(view.stdout)
      assert.equal(m.status, 'failed')
      assert.equal(m.attempts, 3)
      assert.match(m.last_error, /E_NOT_FOUND|exchange/i)
    } finally {
      assert.equal(await failing.stop('SIGTERM'), 0)
    }
  })
})
