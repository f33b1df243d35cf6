import assert from 'node:assert/strict'
import {after, before, describe, test} from 'node:test'

import {BrokerClient} from '../../../src/lib/client/client.js'
import type {Engine} from '../../../src/lib/broker/engine.js'
import {type PermissionRule, resolvePermissions} from '../../../src/lib/broker/permissions.js'
import {startPlainServer} from '../../helpers/broker.js'

const rules: PermissionRule[] = [
  {admin: true, consume: ['*'], identity: 'admin', publish: ['*'], roles: ['admin']},
  {admin: false, consume: ['tenant.*'], identity: 'tenant', publish: ['tenant.*'], roles: []},
]

/** A queue's dead-letter queue receives messages: naming one must need the right to that queue. */
describe('dead-letter queues and permissions', () => {
  let srv: Awaited<ReturnType<typeof startPlainServer>>
  let engine: Engine
  let port: number
  const connect = (identity: string) => BrokerClient.connect({host: '127.0.0.1', identity, plain: true, port, tls: {}})

  before(async () => {
    srv = await startPlainServer({permissionsFor: (id) => resolvePermissions(rules, id)})
    ;({engine, port} = srv)
    const admin = await connect('admin')
    await admin.declareQueue('payments')
    await admin.close()
  })
  after(async () => {
    await srv.stop()
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
