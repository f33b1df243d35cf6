import assert from 'node:assert/strict'
import {test} from 'node:test'

import {globToRegExp, resolvePermissions} from '../../../src/lib/broker/permissions.js'
import {configSchema} from '../../../src/lib/config/schema.js'

test('globs: * and ? only, everything else literal', () => {
  assert.ok(globToRegExp('worker*').test('worker-7'))
  assert.ok(!globToRegExp('worker*').test('xworker'))
  assert.ok(globToRegExp('a.?').test('a.b'))
  assert.ok(!globToRegExp('a.?').test('axb'))
  assert.ok(globToRegExp('(x)+').test('(x)+'))
})

test('default permissions: everyone publishes, consumes only its own queues; only admin administers and monitors', () => {
  const rules = configSchema.parse({}).broker.permissions
  const admin = resolvePermissions(rules, 'admin')
  const alice = resolvePermissions(rules, 'alice')
  const worker = resolvePermissions(rules, 'worker-1')
  assert.equal(admin.admin, true)
  assert.deepEqual(admin.roles.sort(), ['admin', 'monitor'])
  assert.equal(alice.admin, false)
  assert.ok(alice.canPublish('anything'))
  assert.ok(alice.canConsume('alice') && alice.canConsume('alice.inbox'))
  assert.ok(!alice.canConsume('orders') && !alice.canConsume('bob.inbox') && !alice.canConsume('alicex') && !alice.canConsume('alice.'))
  assert.equal(alice.monitor, false)
  assert.equal(admin.monitor, true)
  assert.ok(admin.canConsume('bob.inbox'))
  assert.deepEqual(worker.roles, ['worker'])
  assert.equal(worker.canConsume('default_queue'), false)
  // the CipherMQ identity is never matched by the catch-all rule
  const cmq = resolvePermissions(rules, 'ciphermq')
  assert.ok(!cmq.canPublish('x') && !cmq.canConsume('ciphermq') && !cmq.monitor)
})

test('first matching rule wins; no rule means no rights', () => {
  const rules = configSchema.parse({broker: {permissions: [{consume: ['orders.*'], identity: 'shop-*', publish: ['shop']}]}}).broker.permissions
  const shop = resolvePermissions(rules, 'shop-eu')
  assert.ok(shop.canPublish('shop'))
  assert.ok(!shop.canPublish('billing'))
  assert.ok(shop.canConsume('orders.eu'))
  assert.ok(!shop.canConsume('payments'))
  const other = resolvePermissions(rules, 'mallory')
  assert.ok(!other.canPublish('shop') && !other.canConsume('orders.eu') && !other.admin)
})

test('canPeek: the consume right or monitor; never the delivery queue on monitor alone', () => {
  const rules = [
    {admin: true, consume: ['*'], identity: 'admin', monitor: true},
    {identity: 'watch', monitor: true},
    {identity: '*', publish: ['*']},
  ]
  const delivery = {queue: 'inbox', readers: ['reader']}
  const watch = resolvePermissions(rules, 'watch', delivery)
  assert.equal(watch.canPeek?.('orders'), true)
  assert.equal(watch.canPeek?.('inbox'), false)
  const bob = resolvePermissions(rules, 'bob', delivery)
  assert.equal(bob.canPeek?.('orders'), false)
  assert.equal(bob.canPeek?.('bob.jobs'), true)
  assert.equal(resolvePermissions(rules, 'reader', delivery).canPeek?.('inbox'), true)
  assert.equal(resolvePermissions(rules, 'admin', delivery).canPeek?.('inbox'), true)
})
