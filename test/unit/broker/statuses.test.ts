import assert from 'node:assert/strict'
import {test} from 'node:test'
import {setFlagsFromString} from 'node:v8'
import {runInNewContext} from 'node:vm'

import {StatusJournal, idHashOf} from '../../../src/lib/broker/statuses.js'

test('the latest status of a message wins and keeps its queue', () => {
  const j = new StatusJournal(10)
  j.set('m1', 'sent', 'orders')
  j.set('m2', 'sent', 'orders')
  assert.deepEqual(j.get('m1'), {messageId: 'm1', queue: 'orders', status: 'sent'})
  j.set('m1', 'delivered', 'orders')
  j.set('m1', 'dead-lettered', 'orders.dlq')
  assert.deepEqual(j.get('m1'), {messageId: 'm1', queue: 'orders.dlq', status: 'dead-lettered'})
  assert.deepEqual(j.get('m2'), {messageId: 'm2', queue: 'orders', status: 'sent'})
  assert.equal(j.get('unknown'), null)
})

test('remembers the most recent status changes and forgets older ones, across wrap-around', () => {
  const j = new StatusJournal(100)
  for (let i = 0; i < 1050; i++) j.set(`m${i}`, 'sent', 'q')
  for (let i = 950; i < 1050; i++) assert.equal(j.get(`m${i}`)?.status, 'sent', `m${i} is among the newest 100`)
  assert.equal(j.get('m949'), null)
  assert.equal(j.get('m0'), null)
  j.set('m1000', 'acknowledged', 'q')
  assert.equal(j.get('m1000')?.status, 'acknowledged')
  assert.equal(j.get('m950'), null, 'the newest change pushed out the oldest')
})

test('the journal does not keep the message ids themselves (a full journal costs the broker a few MB, not the ids)', () => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const j = new StatusJournal(200_000)
  gc()
  const before = process.memoryUsage().heapUsed
  // ids shaped like the broker's own (36 characters), each a distinct string
  for (let i = 0; i < 200_000; i++) j.set(`7f3c2a10-5b6e-4d2f-9a81-${i.toString(16).padStart(12, '0')}`, 'sent', 'q')
  gc()
  const grown = process.memoryUsage().heapUsed - before
  assert.ok(grown < 2 * 1024 * 1024, `heap grew ${Math.round(grown / 1024)} KiB for 200,000 statuses`)
  assert.equal(j.get(`7f3c2a10-5b6e-4d2f-9a81-${(199_999).toString(16).padStart(12, '0')}`)?.status, 'sent')
  assert.equal(j.get(`7f3c2a10-5b6e-4d2f-9a81-${(200_000).toString(16).padStart(12, '0')}`), null)
})

test('the id hash is seeded per process: the same id hashes differently in another process, so a colliding id cannot be made up offline', async () => {
  const {execFileSync} = await import('node:child_process')
  const {fileURLToPath} = await import('node:url')
  const mod = fileURLToPath(new URL('../../../src/lib/broker/statuses.js', import.meta.url))
  const other = (): string => execFileSync(process.execPath, ['--input-type=module', '-e', `import {idHashOf} from ${JSON.stringify(mod)}; console.log(idHashOf('order-42').join(','))`], {encoding: 'utf8'}).trim()
  const here = idHashOf('order-42').join(',')
  assert.equal(idHashOf('order-42').join(','), here, 'stable within a process')
  const a = other()
  const b = other()
  assert.notEqual(a, here)
  assert.notEqual(a, b)
})

test('setFor: a message gets its id hashed once, at its first status, and later statuses use the hashes it carries', () => {
  const j = new StatusJournal(100)
  const m = {idHash1: 0, idHash2: 0, messageId: 'order-1'}
  j.setFor(m, 'sent', 'orders')
  assert.deepEqual([m.idHash1, m.idHash2], idHashOf('order-1'))
  assert.deepEqual(j.get('order-1'), {messageId: 'order-1', queue: 'orders', status: 'sent'})
  // the carried hashes decide, not the id: they are not taken again
  const carried = {idHash1: m.idHash1, idHash2: m.idHash2, messageId: 'order-2'}
  j.setFor(carried, 'acknowledged', 'orders')
  assert.deepEqual(j.get('order-1'), {messageId: 'order-1', queue: 'orders', status: 'acknowledged'})
  assert.equal(j.get('order-2'), null)
})
