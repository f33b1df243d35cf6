import assert from 'node:assert/strict'
import {after, before, test} from 'node:test'

import type {Delivery} from '../../../src/lib/wire/types.js'
import {type TestCluster, startCluster} from '../../helpers/cluster.js'
import {waitFor} from '../../helpers/services.js'

let cluster: TestCluster

before(async () => {
  cluster = await startCluster(3)
})

after(async () => {
  await cluster?.cleanup()
})

test('publish on node A, consume on node B: the message crosses nodes through Redis', async () => {
  const [a, b] = cluster.nodes
  const cb = await b.connect()
  await cb.declareQueue('orders', {durable: true})
  const ca = await a.connect()
  const r = await ca.publish('', 'orders', Buffer.from('hello from A'), {messageId: 'm-1'})
  assert.deepEqual(r.queues, ['orders'])
  const got: Delivery[] = []
  await cb.consume('orders', {prefetch: 10}, (d) => {
    got.push(d)
    cb.ack(d.deliveryTag)
  })
  await waitFor(() => got.length === 1, 10_000)
  assert.equal(got[0].body.toString(), 'hello from A')
  assert.equal(got[0].messageId, 'm-1')
  assert.equal(got[0].redelivered, false)
  // the status is cluster-wide: node C answers for a message published on A and acked on B
  const cc = await cluster.nodes[2].connect()
  await waitFor(async () => (await cc.messageStatus('m-1'))?.status === 'acknowledged', 5000)
  for (const c of [ca, cb, cc]) await c.close()
})

test('fanout and topic routing declared on one node route publishes made on the others', async () => {
  const [a, b, c] = cluster.nodes
  const ca = await a.connect()
  await ca.declareExchange('events', 'topic')
  await ca.declareExchange('all', 'fanout')
  for (const q of ['eu', 'us', 'audit']) await ca.declareQueue(q, {durable: true})
  await ca.bind('eu', 'events', 'order.eu.*')
  await ca.bind('us', 'events', 'order.us.#')
  await ca.bind('audit', 'all', '')
  await ca.bind('eu', 'all', '')
  const cb = await b.connect()
  const r1 = await cb.publish('events', 'order.eu.paid', Buffer.from('e1'))
  assert.deepEqual(r1.queues, ['eu'])
  const r2 = await cb.publish('events', 'order.us.ny.paid', Buffer.from('u1'))
  assert.deepEqual(r2.queues, ['us'])
  const cc = await c.connect()
  const r3 = await cc.publish('all', 'ignored', Buffer.from('f1'))
  assert.deepEqual([...r3.queues].sort(), ['audit', 'eu'])
  await assert.rejects(cc.publish('events', 'order.asia.paid', Buffer.from('x')), {code: 'E_UNROUTABLE'})
  const bodies = async (q: string) => {
    const out: string[] = []
    for (;;) {
      const d = await cc.get(q, {noAck: true})
      if (!d) return out
      out.push(d.body.toString())
    }
  }
  assert.deepEqual(await bodies('eu'), ['e1', 'f1'])
  assert.deepEqual(await bodies('us'), ['u1'])
  assert.deepEqual(await bodies('audit'), ['f1'])
  for (const x of [ca, cb, cc]) await x.close()
})

test('a consumer on each node shares one queue: every message once, spread over the nodes', async () => {
  const ca = await cluster.nodes[0].connect()
  await ca.declareQueue('work', {durable: true})
  const seen = new Map<string, number>()
  const perNode = [0, 0, 0]
  const clients = []
  for (let i = 0; i < 3; i++) {
    const c = await cluster.nodes[i].connect()
    clients.push(c)
    await c.consume('work', {prefetch: 5}, (d) => {
      seen.set(d.messageId, (seen.get(d.messageId) ?? 0) + 1)
      perNode[i]++
      // a slow-ish consumer: with instant acks one node can drain a small queue alone before the others' reads land
      setTimeout(() => c.ack(d.deliveryTag), 30)
    })
  }
  const pub = await cluster.nodes[1].connect('admin', {batchConfirms: true})
  const n = 300
  await Promise.all(Array.from({length: n}, (_, i) => pub.publish('', 'work', Buffer.from(`w${i}`), {messageId: `w${i}`})))
  await waitFor(() => seen.size === n, 20_000)
  assert.ok([...seen.values()].every((v) => v === 1), 'no message delivered twice')
  assert.ok(perNode.every((x) => x > 0), `every node's consumer got some: ${perNode.join(',')}`)
  // each node refreshes its view of the others every second: the view converges, it is not instant
  await waitFor(async () => (await pub.stats()).cluster?.nodes.filter((x) => x.alive).length === 3, 5000)
  for (const c of [...clients, pub, ca]) await c.close()
})

test('a queue declared on node A a moment ago: a consumer on node B gets its messages at once, no E_NOT_FOUND', async () => {
  const [a, b] = cluster.nodes
  const ca = await a.connect()
  const cb = await b.connect()
  // several rounds: each CONSUME reaches B before B has heard of the declaration on the events channel
  for (let i = 0; i < 5; i++) {
    const q = `fresh-${i}`
    await ca.declareQueue(q, {durable: true})
    await ca.publish('', q, Buffer.from(`first of ${q}`))
    const got: string[] = []
    await cb.consume(q, {prefetch: 10}, (d) => {
      got.push(d.body.toString())
      cb.ack(d.deliveryTag)
    })
    await waitFor(() => got.length === 1, 10_000)
    assert.deepEqual(got, [`first of ${q}`])
  }
  // a queue no node declared is still not found, after the reload
  await assert.rejects(cb.consume('never-declared', {prefetch: 1}, () => {}), {code: 'E_NOT_FOUND'})
  await assert.rejects(cb.get('never-declared-either'), {code: 'E_NOT_FOUND'})
  for (const c of [ca, cb]) await c.close()
})
