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

test('default permissions: everyone publishes and consumes, only admin administers', () => {
  const rules = configSchema.parse({}).broker.permissions
  const admin = resolvePermissions(rules, 'admin')
  const alice = resolvePermissions(rules, 'alice')
  const worker = resolvePermissions(rules, 'worker-1')
  assert.equal(admin.admin, true)
  assert.deepEqual(admin.roles, ['admin'])
  assert.equal(alice.admin, false)
  assert.ok(alice.canPublish('anything') && alice.canConsume('orders'))
  assert.deepEqual(worker.roles, ['worker'])
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
