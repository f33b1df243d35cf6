import assert from 'node:assert/strict'
import {test} from 'node:test'

import {type DeliveryOut, Engine, topicMatch} from '../../../src/lib/broker/engine.js'

function sink(): {out: DeliveryOut[]; deliver(d: DeliveryOut): void; writable(): boolean} {
  const out: DeliveryOut[] = []
  return {deliver: (d: DeliveryOut) => void out.push(d), out, writable: () => true}
}

const tick = () => new Promise((r) => setImmediate(r))
const body = (s: string) => Buffer.from(s)

test('topic wildcards: * is one word, # is zero or more', () => {
  const m = (p: string, k: string) => topicMatch(p.split('.'), 0, k.split('.'), 0)
  assert.ok(m('a.*.c', 'a.b.c'))
  assert.ok(!m('a.*.c', 'a.c'))
  assert.ok(m('a.#', 'a'))
  assert.ok(m('a.#', 'a.b.c'))
  assert.ok(m('#.c', 'c'))
  assert.ok(m('a.#.c', 'a.x.y.c'))
  assert.ok(!m('a.#.c', 'a.x.y'))
  assert.ok(m('#', 'anything.at.all'))
})

test('direct, fanout and topic exchanges route to the bound queues', () => {
  const e = new Engine()
  for (const q of ['d1', 'd2', 'f1', 'f2', 't1', 't2']) e.declareQueue(q)
  e.declareExchange('dx', 'direct')
  e.declareExchange('fx', 'fanout')
  e.declareExchange('tx', 'topic')
  e.bind('d1', 'dx', 'red')
  e.bind('d2', 'dx', 'blue')
  e.bind('f1', 'fx', 'ignored')
  e.bind('f2', 'fx', '')
  e.bind('t1', 'tx', 'eu.*.orders')
  e.bind('t2', 'tx', 'eu.#')
  assert.deepEqual(e.publish('dx', 'red', body('x')).queues, ['d1'])
  assert.deepEqual(e.publish('fx', 'whatever', body('x')).queues.sort(), ['f1', 'f2'])
  assert.deepEqual(e.publish('tx', 'eu.de.orders', body('x')).queues.sort(), ['t1', 't2'])
  assert.deepEqual(e.publish('tx', 'eu', body('x')).queues, ['t2'])
  assert.deepEqual(e.publish('', 'd2', body('x')).queues, ['d2'])
  assert.throws(() => e.publish('dx', 'green', body('x')), {code: 'E_UNROUTABLE'})
  assert.throws(() => e.publish('nope', 'k', body('x')), {code: 'E_NOT_FOUND'})
  assert.throws(() => e.publish('', 'no-such-queue', body('x')), {code: 'E_UNROUTABLE'})
})

test('CipherMQ defaults exist from the start', () => {
  const e = new Engine()
  assert.deepEqual(e.publish('default_exchange', 'default_key', body('{}')).queues, ['default_queue'])
})

test('prefetch bounds unacked deliveries and consumers get round-robin', async () => {
  const e = new Engine()
  e.declareQueue('q')
  const a = sink()
  const b = sink()
  const sa = e.openSession('a', a)
  const sb = e.openSession('b', b)
  e.consume(sa, 'q', {prefetch: 2})
  e.consume(sb, 'q', {prefetch: 2})
  for (let i = 0; i < 10; i++) e.publish('', 'q', body(`m${i}`))
  await tick()
  assert.equal(a.out.length, 2)
  assert.equal(b.out.length, 2)
  assert.deepEqual([a.out[0], b.out[0], a.out[1], b.out[1]].map((d) => d.msg.body.toString()), ['m0', 'm1', 'm2', 'm3'])
  e.ack(sa, a.out[0].deliveryTag)
  await tick()
  assert.equal(a.out.length, 3)
  assert.equal(e.queues.get('q')!.ready.length, 5)
})

test('unacked messages return flagged redelivered when the session closes', async () => {
  const e = new Engine()
  e.declareQueue('q')
  const a = sink()
  const sa = e.openSession('a', a)
  e.consume(sa, 'q', {prefetch: 10})
  const {messageId} = e.publish('', 'q', body('hello'))
  await tick()
  assert.equal(e.messageStatus(messageId)?.status, 'delivered')
  e.closeSession(sa)
  const b = sink()
  const sb = e.openSession('b', b)
  const d = e.get(sb, 'q')!
  assert.equal(d.msg.redelivered, true)
  assert.equal(d.msg.deliveryCount, 2)
  e.ack(sb, d.deliveryTag)
  assert.equal(e.messageStatus(messageId)?.status, 'acknowledged')
  assert.equal(e.queues.get('q')!.unacked, 0)
})

test('after the delivery limit a message moves to the dead-letter queue', () => {
  const e = new Engine({deliveryLimit: 3})
  e.declareQueue('work', {deadLetter: 'work.dlq'})
  const {messageId} = e.publish('', 'work', body('poison'))
  const s = e.openSession('c', sink())
  for (let i = 0; i < 3; i++) {
    const d = e.get(s, 'work')
    assert.ok(d, `delivery ${i + 1}`)
    e.nack(s, d.deliveryTag, true)
  }
  assert.equal(e.get(s, 'work'), null)
  const dead = e.get(s, 'work.dlq')!
  assert.equal(dead.msg.messageId, messageId)
  assert.equal(dead.msg.headers['x-death-reason'], 'delivery-limit')
  assert.equal(e.messageStatus(messageId)?.status, 'delivered')
})

test('reject sends to the dead-letter queue; nack without requeue too', () => {
  const e = new Engine()
  e.declareQueue('w', {deadLetter: 'w.dead'})
  e.publish('', 'w', body('a'))
  const s = e.openSession('c', sink())
  const d = e.get(s, 'w')!
  e.reject(s, d.deliveryTag, 'bad input')
  const x = e.get(s, 'w.dead')!
  assert.equal(x.msg.headers['x-death-reason'], 'bad input')
  assert.throws(() => e.ack(s, d.deliveryTag), {code: 'E_UNKNOWN_TAG'})
})

test('TTL expires messages and max-length drops the oldest', () => {
  let now = 1000
  const e = new Engine({now: () => now})
  e.declareQueue('t', {deadLetter: 't.dlq', ttlMs: 50})
  e.publish('', 't', body('old'))
  now += 100
  const s = e.openSession('c', sink())
  assert.equal(e.get(s, 't'), null)
  assert.equal(e.get(s, 't.dlq')!.msg.headers['x-death-reason'], 'expired')
  e.declareQueue('m', {maxLength: 2})
  const first = e.publish('', 'm', body('1')).messageId
  e.publish('', 'm', body('2'))
  e.publish('', 'm', body('3'))
  assert.equal(e.queues.get('m')!.ready.length, 2)
  assert.equal(e.messageStatus(first)?.status, 'dropped')
  assert.equal(e.get(s, 'm')!.msg.body.toString(), '2')
})

test('statuses go sent -> delivered -> acknowledged and are counted in stats', async () => {
  const e = new Engine()
  e.declareQueue('q')
  const s = e.openSession('c', sink())
  const {messageId} = e.publish('', 'q', body('x'))
  assert.equal(e.messageStatus(messageId)?.status, 'sent')
  const d = e.get(s, 'q')!
  assert.equal(e.messageStatus(messageId)?.status, 'delivered')
  e.ack(s, d.deliveryTag)
  const st = e.stats()
  assert.equal(st.statuses.acknowledged, 1)
  assert.equal(st.queues.find((q) => q.name === 'q')!.acked, 1)
  assert.equal(e.messageStatus('nope'), null)
})

test('bad names and types are usage errors', () => {
  const e = new Engine()
  assert.throws(() => e.declareQueue('has space'), {code: 'E_BAD_NAME'})
  assert.throws(() => e.declareExchange('x', 'headers' as never), {code: 'E_BAD_TYPE'})
  e.declareExchange('x', 'fanout')
  assert.throws(() => e.declareExchange('x', 'topic'), {code: 'E_EXISTS'})
  assert.throws(() => e.bind('nope', 'x', ''), {code: 'E_NOT_FOUND'})
  e.declareQueue('d', {durable: true})
  assert.equal(e.declareQueue('d').durable, true)
  assert.throws(() => e.declareQueue('d', {durable: false}), {code: 'E_QUEUE_MISMATCH'})
})

/**
 * Publishes `count` 64 KiB messages to `queue` while its one consumer cannot take any, and checks that
 * flow is set first by the `at`-th (1-based), that a publisher waiting for it is released once the
 * consumer works the backlog down, and that every message was delivered.
 */
async function bigMessagesToLaggingConsumer(e: Engine, queue: string, count: number, at: number, why: string): Promise<void> {
  let writable = false
  const out: DeliveryOut[] = []
  const s = e.openSession('c', {deliver: (d) => void out.push(d), writable: () => writable})
  e.consume(s, queue, {noAck: true})
  const chunk = Buffer.alloc(64 * 1024, 1)
  const flows = []
  for (let i = 0; i < count; i++) flows.push(e.publish('', queue, chunk).flow)
  assert.deepEqual(flows.slice(0, at - 1), Array(at - 1).fill(undefined))
  assert.equal(flows[at - 1], queue, why)
  let released = 0
  e.whenFlowing(queue, () => released++)
  await tick()
  assert.equal(released, 0)
  writable = true
  e.kick(s)
  await tick()
  assert.equal(released, 1, 'released once the backlog is worked down')
  assert.equal(out.length, count, 'nothing was refused or lost')
}

test('flow control by bytes: big messages to a lagging non-durable queue pause the publisher at half the byte limit, before any is refused', async () => {
  const e = new Engine({flowHigh: 5000, transientMaxBytes: 1024 * 1024})
  e.declareQueue('big')
  await bigMessagesToLaggingConsumer(e, 'big', 9, 8, 'the 8th 64 KiB message reaches half of the 1 MiB limit')
})

test('flow control by bytes: big messages to a consumed durable queue pause the publisher when its in-memory window is full, not after paging', async () => {
  const e = new Engine({flowHigh: 5000, windowBytes: 1024 * 1024})
  e.declareQueue('big', {durable: true})
  await bigMessagesToLaggingConsumer(e, 'big', 17, 16, 'the 16th 64 KiB message fills the 1 MiB window')
  // without consumers a durable queue is a buffer: it takes a backlog far past its window and never pushes back
  e.declareQueue('backlog', {durable: true})
  for (let i = 0; i < 40; i++) assert.equal(e.publish('', 'backlog', Buffer.alloc(64 * 1024, 1)).flow, undefined)
})

test('flow control: a queue whose consumers lag pushes back on publishers, and lets them go once worked down', async () => {
  const e = new Engine({flowHigh: 10})
  e.declareQueue('slow')
  e.declareQueue('buffer')
  // a queue without consumers is a buffer: it takes everything and never pushes back
  for (let i = 0; i < 50; i++) assert.equal(e.publish('', 'buffer', body(`b${i}`)).flow, undefined)
  let writable = false
  const out: DeliveryOut[] = []
  const s = e.openSession('c', {deliver: (d) => void out.push(d), writable: () => writable})
  e.consume(s, 'slow', {noAck: true})
  const flows = []
  for (let i = 0; i < 12; i++) flows.push(e.publish('', 'slow', body(`m${i}`)).flow)
  assert.deepEqual(flows.slice(0, 9), Array(9).fill(undefined))
  assert.equal(flows[9], 'slow', 'the 10th ready message reaches flowHigh')
  let released = 0
  e.whenFlowing('slow', () => released++)
  await tick()
  assert.equal(released, 0, 'still backed up while the consumer cannot take more')
  writable = true
  e.kick(s)
  await tick()
  assert.equal(released, 1, 'released once the consumer worked the backlog down')
  assert.equal(out.length, 12, 'nothing was lost')
  // the last consumer leaving turns the queue back into a buffer and frees anyone waiting
  writable = false
  for (let i = 0; i < 12; i++) e.publish('', 'slow', body(`n${i}`))
  e.whenFlowing('slow', () => released++)
  e.closeSession(s)
  assert.equal(released, 2)
})

test('unbind removes one binding only; a binding that is not there is E_NOT_FOUND naming the keys there are', () => {
  const e = new Engine()
  e.declareQueue('q')
  e.declareExchange('tx', 'topic')
  e.bind('q', 'tx', 'a.#')
  e.bind('q', 'tx', 'b.*')
  e.unbind('q', 'tx', 'a.#')
  assert.throws(() => e.publish('tx', 'a.x', body('x')), (err: Error & {code?: string}) => err.code === 'E_UNROUTABLE')
  assert.deepEqual(e.publish('tx', 'b.x', body('x')).queues, ['q'])
  assert.throws(() => e.unbind('q', 'tx', 'a.#'), (err: Error & {code?: string; hint?: string}) => err.code === 'E_NOT_FOUND' && /"b\.\*"/.test(err.hint ?? ''))
  e.declareExchange('fx', 'fanout')
  e.bind('q', 'fx', '')
  e.unbind('q', 'fx', 'any key: fanout ignores it')
  assert.deepEqual(e.listBindings().filter((b) => b.exchange === 'fx'), [])
})

test('deleteExchange: if-unused refuses while bound; the built-in exchanges stay; the queues stay', () => {
  const e = new Engine()
  e.declareQueue('q')
  e.declareExchange('x', 'direct')
  e.bind('q', 'x', 'k')
  assert.throws(() => e.deleteExchange('x', {ifUnused: true}), (err: Error & {code?: string}) => err.code === 'E_IN_USE')
  assert.equal(e.deleteExchange('x'), 1)
  assert.ok(!e.exchanges.has('x'))
  assert.ok(e.queues.has('q'))
  assert.throws(() => e.deleteExchange('x'), (err: Error & {code?: string}) => err.code === 'E_NOT_FOUND')
  assert.throws(() => e.deleteExchange('default_exchange'), (err: Error & {code?: string}) => err.code === 'E_RESERVED')
  assert.throws(() => e.deleteExchange(''), (err: Error & {code?: string}) => err.code === 'E_RESERVED')
})

test('peek leaves a queue exactly as it was: same order, no delivery counted, no redelivered flag, status unchanged', () => {
  let now = 1_000
  const e = new Engine({now: () => now})
  e.declareQueue('q', {ttlMs: 500})
  const ids = ['a', 'b', 'c'].map((s) => e.publish('', 'q', body(s)).messageId)
  const p = e.peek('q', 2)
  assert.equal(p.ready, 3)
  assert.deepEqual(p.messages.map((m) => m.body.toString()), ['a', 'b'])
  assert.deepEqual(e.peek('q', 10).messages.map((m) => m.messageId), ids)
  assert.equal(e.messageStatus(ids[0])?.status, 'sent')
  const s = e.openSession('c', sink())
  const d = e.get(s, 'q')!
  assert.equal(d.msg.body.toString(), 'a')
  assert.equal(d.msg.deliveryCount, 1)
  assert.equal(d.msg.redelivered, false)
  assert.equal(e.listQueues().find((q) => q.name === 'q')!.delivered, 1)
  // expired messages are not shown
  now += 1_000
  assert.deepEqual(e.peek('q', 10).messages, [])
})

test('definitions: sorted, a default NAME.dlq as null, a named dead-letter queue by name', () => {
  const e = new Engine()
  e.declareQueue('b', {durable: true, maxLength: 5})
  e.declareQueue('a', {deadLetter: 'graveyard', durable: true, ttlMs: 1000})
  e.declareExchange('z', 'fanout', {durable: false})
  e.bind('b', 'z', '')
  const d = e.definitions()
  assert.deepEqual(d.queues.map((q) => q.name), ['a', 'b', 'b.dlq', 'default_queue', 'default_queue.dlq', 'graveyard'])
  assert.deepEqual(d.queues[0], {deadLetter: 'graveyard', durable: true, maxLength: null, name: 'a', ttlMs: 1000})
  assert.deepEqual(d.queues[1], {deadLetter: null, durable: true, maxLength: 5, name: 'b', ttlMs: null})
  assert.deepEqual(d.exchanges, [{durable: true, name: 'default_exchange', type: 'direct'}, {durable: false, name: 'z', type: 'fanout'}])
  assert.deepEqual(d.bindings, [{exchange: 'default_exchange', queue: 'default_queue', routingKey: 'default_key'}, {exchange: 'z', queue: 'b', routingKey: ''}])
})

test('a redriven dead letter: the ack of its dead-letter copy leaves the status of the republished message', () => {
  const e = new Engine()
  e.declareQueue('q', {deadLetter: 'dead'})
  const id = e.publish('', 'q', body('x')).messageId
  const s = e.openSession('c', sink())
  e.reject(s, e.get(s, 'q')!.deliveryTag)
  assert.equal(e.messageStatus(id)?.status, 'dead-lettered')
  const d = e.get(s, 'dead')!
  e.publish('', 'q', d.msg.body, {headers: {'x-redriven-from': 'dead'}, messageId: id})
  e.ack(s, d.deliveryTag)
  assert.deepEqual(e.messageStatus(id), {messageId: id, queue: 'q', status: 'sent'})
  // an ordinary ack on the dead-letter queue still says acknowledged
  const id2 = e.publish('', 'dead', body('y')).messageId
  e.ack(s, e.get(s, 'dead')!.deliveryTag)
  assert.deepEqual(e.messageStatus(id2), {messageId: id2, queue: 'dead', status: 'acknowledged'})
})
