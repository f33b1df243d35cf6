import assert from 'node:assert/strict'
import {after, before, describe, test} from 'node:test'

import {BrokerClient} from '../../../src/lib/broker/client.js'
import {Engine} from '../../../src/lib/broker/engine.js'
import {type PermissionRule, resolvePermissions} from '../../../src/lib/broker/permissions.js'
import {BrokerServer} from '../../../src/lib/broker/server.js'
import {silentLogger} from '../../../src/lib/log.js'

const rules: PermissionRule[] = [
  {admin: true, consume: ['*'], identity: 'admin', publish: ['*'], roles: ['admin']},
  {admin: false, consume: ['tenant.*'], identity: 'tenant', publish: ['tenant.*'], roles: []},
]

/** A queue's dead-letter queue receives messages: naming one must need the right to that queue. */
describe('dead-letter queues and permissions', () => {
  const engine = new Engine()
  let server: BrokerServer
  let port: number
  const connect = (identity: string) => BrokerClient.connect({host: '127.0.0.1', identity, plain: true, port, tls: {}})

  before(async () => {
    server = new BrokerServer({
      engine,
      keys: {get: () => null, put: () => {}},
      limits: {handshakeTimeoutMs: 5000, heartbeatMs: 0, maxPayload: 1 << 20, maxUnconfirmed: 100},
      logger: silentLogger,
      permissionsFor: (id) => resolvePermissions(rules, id),
    })
    port = await server.listen(0, '127.0.0.1')
    const admin = await connect('admin')
    await admin.declareQueue('payments')
    await admin.close()
  })
  after(async () => {
    await server.close()
    engine.stop()
  })

  test('a tenant cannot route its rejected messages into a queue it has no rights to', async () => {
    const c = await connect('tenant')
    try {
      await assert.rejects(c.declareQueue('tenant.inbox', {deadLetter: 'payments'}), {code: 'E_FORBIDDEN'})
      await assert.rejects(c.declareQueue('tenant.other', {deadLetter: 'brand-new-queue'}), {code: 'E_FORBIDDEN'})
      assert.equal(engine.queues.has('tenant.inbox'), false)
      assert.equal(engine.queues.has('brand-new-queue'), false)
      // its own dead-letter queue is fine
      await c.declareQueue('tenant.work', {deadLetter: 'tenant.work.dlq'})
      assert.equal(engine.queues.get('tenant.work')?.deadLetter, 'tenant.work.dlq')
    } finally {
      await c.close()
    }
    assert.equal(engine.queues.get('payments')!.ready.length, 0)
  })
})
