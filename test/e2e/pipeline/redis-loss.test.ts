/**
 * Issue 18, failure 3: a Redis without persistence, SIGKILLed with a backlog in the stream, comes
 * back empty. The records store still holds every accepted message; the workers' reconciler (one
 * at a time, by a lease in Redis) puts the lost ones back, and the consumer gets each exactly once.
 * Two workers run: only the lease holder reconciles, and the other takes over when it is killed.
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
import {privateRedis} from '../../helpers/pipeline.js'
import {freePort, waitFor} from '../../helpers/services.js'
import {sleep} from './flow.js'
import {spawnMq} from './spawn.js'

type Proc = Awaited<ReturnType<typeof spawnMq>>

async function metric(port: number, name: string): Promise<number> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`)
  const text = await r.text()
  let sum = 0
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) sum += Number(m[1])
  return sum
}

describe('Redis restarted empty with a backlog: the reconciler delivers every accepted message exactly once', () => {
  const h = tempHome('mq-pipe-rloss-')
  const home = new MqHome(h.dir)
  let redis: Awaited<ReturnType<typeof privateRedis>>
  let broker: BrokerProcess
  let proxy: Proc
  const workers: {proc: Proc; metricsPort: number; name: string}[] = []
  let consumer: BrokerClient
  let client: ApiClient
  let admin: ApiClient
  let env: NodeJS.ProcessEnv
  const received: {id: string; redelivered: boolean}[] = []

  const startWorker = async (name: string) => {
    const metricsPort = await freePort()
    const proc = await spawnMq(['worker', 'start', '--name', name, '--metrics-port', String(metricsPort), '--retry-delay', '200ms', '--routing-key', 'rloss'], env, 'worker ready')
    workers.push({metricsPort, name, proc})
  }
  const leaders = async () => {
    const alive = workers.filter((w) => w.proc.proc.exitCode === null && w.proc.proc.signalCode === null)
    const flags = await Promise.all(alive.map(async (w) => ({leader: (await metric(w.metricsPort, 'mq_worker_reconciler_leader')) === 1, w})))
    return flags.filter((f) => f.leader).map((f) => f.w)
  }
  /** n messages accepted while every worker is paused, then Redis is SIGKILLed and restarted empty */
  const loseBacklog = async (tag: string, n: number, paused: Proc[]): Promise<string[]> => {
    for (const w of paused) w.proc.kill('SIGSTOP')
    const ids: string[] = []
    try {
      for (let i = 0; i < n; i++) {
        const r = await client.request<{message_id?: string}>('POST', '/api/v1/messages', {message_body: `${tag} ${i}`, sender_number: '+4915200000000'})
        assert.equal(r.status, 202)
        ids.push(r.body.message_id!)
      }
      await redis.kill()
      await redis.start()
    } finally {
      for (const w of paused) w.proc.kill('SIGCONT')
    }
    return ids
  }
  const recordsWith = async (status: string) => (await admin.call<{messages: {message_id: string}[]}>('GET', `/admin/messages?status=${status}&limit=10000`)).messages.map((m) => m.message_id)

  before(async () => {
    redis = await privateRedis({persistence: false})
    env = {MQ_REDIS_KEY_PREFIX: 'rloss:', MQ_REDIS_URL: redis.url, MQ_WORKER_RECONCILE_AFTER: '1s', MQ_WORKER_RECONCILE_INTERVAL: '250ms'}
    broker = await spawnBroker({env, home: h.dir})
    await CertificateAuthority.open(home, defaultConfig().pki).ensureDevelopment({clients: ['alice', 'proxy', 'worker'], servers: ['proxy-server']})
    env = {...env, MQ_CLIENT_API: `https://127.0.0.1:${broker.apiPort}`, MQ_HOME: h.dir}
    const proxyPort = await freePort()
    proxy = await spawnMq(['proxy', 'start', '--port', String(proxyPort), '--rate', '0'], env, 'proxy ready')
    await startWorker('w1')
    await startWorker('w2')
    consumer = await broker.connect('admin')
    await consumer.declareQueue('rloss', {durable: true})
    await consumer.bind('rloss', 'default_exchange', 'rloss')
    await consumer.consume('rloss', {prefetch: 100}, (d: Delivery) => {
      received.push({id: d.messageId, redelivered: d.redelivered})
      consumer.ack(d.deliveryTag)
    })
    client = new ApiClient(`https://127.0.0.1:${proxyPort}`, clientTlsOptions(home, 'alice'), 5000)
    admin = new ApiClient(`https://127.0.0.1:${broker.apiPort}`, clientTlsOptions(home, 'admin'), 5000)
  })

  after(async () => {
    client?.close()
    admin?.close()
    await consumer?.close().catch(() => {})
    for (const w of workers) await w.proc.stop('SIGKILL')
    await proxy?.stop('SIGKILL')
    await broker?.stop()
    await redis?.destroy()
    h.cleanup()
  })

  it('two workers: exactly one holds the reconciler lease, and only it reconciles', async () => {
    await waitFor(async () => (await leaders()).length === 1, 10_000, 100)
    const passes = async () => Promise.all(workers.map((w) => metric(w.metricsPort, 'mq_worker_reconcile_passes_total')))
    const before = await passes()
    await sleep(1500)
    const afterwards = await passes()
    const [leader] = await leaders()
    for (const [i, w] of workers.entries()) {
      if (w === leader) assert.ok(afterwards[i] > before[i], `the leader ${w.name} made no pass in 1.5 s`)
      else assert.equal(afterwards[i], 0, `${w.name} reconciled without the lease`)
    }
  })

  it('a backlog lost with Redis (no AOF, no RDB) is delivered once per accepted message; every record ends delivered', async () => {
    const ids = await loseBacklog('lost', 100, workers.map((w) => w.proc))
    await waitFor(() => ids.every((id) => received.some((m) => m.id === id)), 30_000, 100)
    // passes keep running: nothing more may arrive
    await sleep(2000)
    for (const id of ids) assert.equal(received.filter((m) => m.id === id).length, 1, `message ${id}`)
    assert.equal(received.length, ids.length)
    assert.deepEqual((await recordsWith('delivered')).sort(), [...ids].sort())
    assert.deepEqual(await recordsWith('queued'), [])
    assert.deepEqual(await recordsWith('processing'), [])
    const requeued = (await Promise.all(workers.map((w) => metric(w.metricsPort, 'mq_worker_reconciled_total')))).reduce((a, b) => a + b, 0)
    // a worker blocked in XREADGROUP when paused may still hold (in its socket) up to its concurrency (4)
    // entries Redis handed it before the kill: it delivers those itself
    assert.ok(requeued >= ids.length - 8, `only ${requeued} re-enqueued`)
  })

  it('the leader killed with -9: the other worker takes the lease and reconciles the next loss', async () => {
    const [leader] = await leaders()
    assert.ok(leader)
    const t0 = Date.now()
    await leader.proc.stop('SIGKILL')
    const survivor = workers.find((w) => w !== leader)!
    // the dead leader's lease (three intervals, 750 ms) expires on its own
    await waitFor(async () => (await leaders()).includes(survivor), 10_000, 50)
    const took = Date.now() - t0
    assert.ok(took < 3000, `take-over took ${took} ms`)
    const n = received.length
    const ids = await loseBacklog('lost-again', 30, [survivor.proc])
    await waitFor(() => ids.every((id) => received.some((m) => m.id === id)), 30_000, 100)
    await sleep(1500)
    for (const id of ids) assert.equal(received.filter((m) => m.id === id).length, 1, `message ${id}`)
    assert.equal(received.length, n + ids.length)
    assert.deepEqual(await recordsWith('queued'), [])
  })
})
