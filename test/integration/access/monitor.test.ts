/**
 * The monitor right, against a real broker process: queue lists, message statuses, stats and
 * /metrics name queues and clients, so a plain identity does not get them; admin and an identity
 * with `monitor: true` do.
 */
import assert from 'node:assert/strict'
import {request} from 'node:https'
import {writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import type {BrokerClient} from '../../../src/lib/client/client.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {CertificateAuthority, clientTlsOptions} from '../../../src/lib/pki/index.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

describe('monitoring needs the monitor right', () => {
  const t = tempHome('mq-monitor-')
  let broker: BrokerProcess
  const clients: BrokerClient[] = []
  let messageId = ''
  const as = async (who: string) => {
    const c = await broker.connect(who)
    clients.push(c)
    return c
  }
  const get = (path: string, identity: string) =>
    new Promise<{status: number; body: string}>((resolve, reject) => {
      const req = request({...clientTlsOptions(new MqHome(t.dir), identity), checkServerIdentity: () => undefined, host: '127.0.0.1', path, port: broker.apiPort}, (res) => {
        let b = ''
        res.on('data', (d) => (b += d))
        res.on('end', () => resolve({body: b, status: res.statusCode ?? 0}))
      })
      req.on('error', reject)
      req.end()
    })

  before(async () => {
    writeFileSync(join(t.dir, 'config.yaml'), ['broker:', '  permissions:', '    - {identity: admin, admin: true, consume: ["*"]}', '    - {identity: ops, monitor: true}', '    - {identity: "*"}', ''].join('\n'))
    broker = await spawnBroker({home: t.dir})
    const ca = CertificateAuthority.open(new MqHome(t.dir), defaultConfig().pki)
    for (const who of ['alice', 'ops']) await ca.issue(who, {type: 'client'})
    const admin = await as('admin')
    await admin.declareQueue('secret.payroll')
    messageId = (await admin.publish('', 'secret.payroll', Buffer.from('x'))).messageId
  })
  after(async () => {
    for (const c of clients) await c.close().catch(() => {})
    await broker?.cleanup()
    t.cleanup()
  })

  test('a plain identity: LIST_QUEUES, LIST_EXCHANGES, STATUS and STATS are E_FORBIDDEN', async () => {
    const alice = await as('alice')
    const forbidden = (e: Error & {code?: string; hint?: string}) => e.code === 'E_FORBIDDEN' && /\{identity: alice, monitor: true\}/.test(e.hint ?? '')
    await assert.rejects(alice.listQueues(), forbidden)
    await assert.rejects(alice.listExchanges(), forbidden)
    await assert.rejects(alice.messageStatus(messageId), forbidden)
    await assert.rejects(alice.stats(), forbidden)
    // what a user sees: mq queue list exits 77 and names the rule
    const r = await runCli(['queue', 'list', '--identity', 'alice'], {env: broker.cliEnv()})
    assert.equal(r.code, 77, r.stderr)
    assert.match(r.stderr, /alice may not list queues: it needs the monitor right/)
    assert.doesNotMatch(r.stdout, /secret\.payroll/)
  })

  test('a plain identity: /metrics, /api/queues, /api/exchanges, /api/stats, /api/messages/:id answer 403', async () => {
    for (const path of ['/metrics', '/api/queues', '/api/exchanges', '/api/stats', `/api/messages/${messageId}`]) {
      const r = await get(path, 'alice')
      assert.equal(r.status, 403, `${path}: ${r.body}`)
      assert.equal(JSON.parse(r.body).error.code, 'E_FORBIDDEN')
      assert.doesNotMatch(r.body, /secret\.payroll/)
    }
  })

  test('admin and an identity granted monitor: true see them', async () => {
    for (const who of ['admin', 'ops']) {
      const c = await as(who)
      assert.ok((await c.listQueues()).some((q) => q.name === 'secret.payroll'))
      assert.equal((await c.messageStatus(messageId))?.status, 'sent')
      assert.ok((await c.stats()).queues)
      const m = await get('/metrics', who)
      assert.equal(m.status, 200)
      assert.match(m.body, /mq_queue_messages\{queue="secret\.payroll"\} 1/)
      assert.equal((await get(`/api/messages/${messageId}`, who)).status, 200)
    }
    // monitoring is not consuming
    const ops = await as('ops')
    await assert.rejects(ops.get('secret.payroll'), (e: Error & {code?: string}) => e.code === 'E_FORBIDDEN')
  })
})

/**
 * The portal identity's default rule: its live overview reads /api/stats (monitor), so monitor is
 * all it gets. Before, it also held the HTTPS role admin: a stolen portal certificate could purge
 * and delete queues and read the records admin API.
 */
describe('default permissions: the portal identity monitors and nothing more', () => {
  const t = tempHome('mq-monitor-portal-')
  let broker: BrokerProcess
  const call = (method: string, path: string, identity: string) =>
    new Promise<{status: number; body: string}>((resolve, reject) => {
      const req = request({...clientTlsOptions(new MqHome(t.dir), identity), checkServerIdentity: () => undefined, host: '127.0.0.1', method, path, port: broker.apiPort}, (res) => {
        let b = ''
        res.on('data', (d) => (b += d))
        res.on('end', () => resolve({body: b, status: res.statusCode ?? 0}))
      })
      req.on('error', reject)
      req.end()
    })

  before(async () => {
    broker = await spawnBroker({home: t.dir})
    await CertificateAuthority.open(new MqHome(t.dir), defaultConfig().pki).issue('portal', {type: 'client'})
    const admin = await broker.connect('admin')
    await admin.declareQueue('orders')
    await admin.publish('', 'orders', Buffer.from('keep me'))
    await admin.close()
  })
  after(async () => {
    await broker?.cleanup()
    t.cleanup()
  })

  test('portal: /api/stats answers 200; purge, delete and the records admin API answer 403 and touch nothing', async () => {
    const stats = await call('GET', '/api/stats', 'portal')
    assert.equal(stats.status, 200, stats.body)
    for (const [method, path] of [
      ['POST', '/api/queues/orders/purge'],
      ['DELETE', '/api/queues/orders'],
      ['GET', '/admin/messages'],
      ['GET', '/admin/clients'],
    ]) {
      const r = await call(method, path, 'portal')
      assert.equal(r.status, 403, `${method} ${path}: ${r.body}`)
      assert.equal(JSON.parse(r.body).error.code, 'E_FORBIDDEN')
    }
    const queues = JSON.parse((await call('GET', '/api/queues', 'admin')).body) as {name: string; messages: number}[]
    assert.equal(queues.find((q) => q.name === 'orders')?.messages, 1)
  })
})
