import assert from 'node:assert/strict'
import {join} from 'node:path'
import {test} from 'node:test'

import {type DeliveryOut, Engine, type EngineOptions} from '../../../src/lib/broker/engine.js'
import {DurableStore} from '../../../src/lib/broker/store.js'
import type {MqError} from '../../../src/lib/errors.js'
import {peekQueue} from '../../helpers/engine.js'
import {tempHome} from '../../helpers/home.js'

/** a tiny window, so a few hundred messages make a backlog mostly on disk */
const WINDOW = 50

function openStore(dir: string): DurableStore {
  return new DurableStore(join(dir, 'data'), 0, {keyFile: join(dir, 'secrets', 'broker.key')})
}

function engine(store: DurableStore, opts: EngineOptions = {}): Engine {
  return new Engine({store, windowBytes: 1 << 20, windowMessages: WINDOW, ...opts})
}

const session = (e: Engine) => e.openSession('c', {deliver: () => {}, writable: () => true})
const ids = (n: number, prefix = 'm') => Array.from({length: n}, (_, i) => `${prefix}-${i}`)

async function withHome(fn: (dir: string, opened: DurableStore[]) => Promise<void>): Promise<void> {
  const h = tempHome()
  const opened: DurableStore[] = []
  try {
    await fn(h.dir, opened)
  } finally {
    for (const s of opened) await s.close().catch(() => {})
    h.cleanup()
  }
}

test('a durable backlog beyond the window is held on disk, and after a restart delivered completely and in order with acks', async () => {
  await withHome(async (dir, opened) => {
    const store = openStore(dir)
    opened.push(store)
    const e = engine(store)
    e.declareQueue('big', {durable: true})
    for (const id of ids(500)) e.publish('', 'big', Buffer.from(`body of ${id}`), {messageId: id})
    const q = e.queues.get('big')!
    assert.equal(q.messages, 500)
    assert.equal(q.ready.length, WINDOW, 'only the window is in memory')
    const st = e.listQueues().find((x) => x.name === 'big')!
    assert.equal(st.memoryMessages, WINDOW)
    assert.ok(st.diskBytes! > 400 * 10 && st.memoryBytes! < 60 * 20, `memory ${st.memoryBytes} disk ${st.diskBytes}`)
    // drain a part before the restart: acks of messages read back from disk are remembered
    const s = session(e)
    for (let i = 0; i < 120; i++) e.ack(s, e.get(s, 'big')!.deliveryTag)
    await store.close()

    const store2 = openStore(dir)
    opened.push(store2)
    const e2 = engine(store2)
    const q2 = e2.queues.get('big')!
    assert.equal(q2.messages, 380, 'the index knows the count without reading a body')
    assert.equal(q2.ready.length, 0, 'a restart reads no message')
    const got: DeliveryOut[] = []
    const s2 = e2.openSession('c', {deliver: (d) => void got.push(d), writable: () => true})
    e2.consume(s2, 'big', {prefetch: 7})
    // a consumer that acks as it goes (prefetch 7): the window is refilled from disk as it drains
    for (let guard = 0; got.length < 380 && guard < 10_000; guard++) {
      await new Promise((r) => setImmediate(r))
      for (const d of got.slice(-7)) if (s2.unacked.has(d.deliveryTag)) e2.ack(s2, d.deliveryTag)
    }
    assert.deepEqual(got.map((d) => d.msg.messageId), ids(500).slice(120))
    assert.equal(got[0].msg.body.toString(), 'body of m-120')
    assert.equal(e2.queues.get('big')!.messages, 0)
    for (const tag of [...s2.unacked.keys()]) e2.ack(s2, tag)
    await store2.close()
    const store3 = openStore(dir)
    opened.push(store3)
    assert.equal(engine(store3).queues.get('big')!.messages, 0, 'every ack reached the disk')
  })
})

test('a consumer that keeps up never makes messages take a round trip through the disk', async () => {
  await withHome(async (dir, opened) => {
    const store = openStore(dir)
    opened.push(store)
    const e = engine(store)
    e.declareQueue('hot', {durable: true})
    let reads = 0
    const read = store.readQueue.bind(store)
    store.readQueue = (...a) => {
      reads++
      return read(...a)
    }
    const s = session(e)
    for (let i = 0; i < 1000; i++) {
      e.publish('', 'hot', Buffer.from(`m${i}`))
      if (i % 10 === 9) for (let k = 0; k < 10; k++) e.ack(s, e.get(s, 'hot')!.deliveryTag)
    }
    assert.equal(reads, 0)
    assert.equal(e.queues.get('hot')!.messages, 0)
  })
})

test('nack, reject, redelivery and the delivery limit stay right for messages that were on disk', async () => {
  await withHome(async (dir, opened) => {
    const store = openStore(dir)
    opened.push(store)
    const e = engine(store, {deliveryLimit: 3})
    e.declareQueue('w', {deadLetter: 'w.dlq', durable: true})
    for (const id of ids(200)) e.publish('', 'w', Buffer.from(id), {messageId: id})
    const s = session(e)
    // everything in the window goes; the next ones come from disk
    for (let i = 0; i < WINDOW; i++) e.ack(s, e.get(s, 'w')!.deliveryTag)
    const fromDisk = e.get(s, 'w')!
    assert.equal(fromDisk.msg.messageId, `m-${WINDOW}`)
    // requeued: back at the head, flagged redelivered
    e.nack(s, fromDisk.deliveryTag, true)
    const again = e.get(s, 'w')!
    assert.equal(again.msg.messageId, `m-${WINDOW}`)
    assert.equal(again.msg.redelivered, true)
    assert.equal(again.msg.deliveryCount, 2)
    // nack without requeue and reject: into the dead-letter queue, with why
    e.nack(s, again.deliveryTag, false)
    const r = e.get(s, 'w')!
    e.reject(s, r.deliveryTag, 'bad input')
    const dead = peekQueue(e, 'w.dlq')
    assert.deepEqual(dead.map((m) => [m.messageId, m.headers['x-death-reason']]), [
      [`m-${WINDOW}`, 'rejected'],
      [`m-${WINDOW + 2 - 1}`, 'bad input'],
    ])
    // delivered and not acked when the broker dies: redelivered after the restart, counted, and
    // dead-lettered once the delivery limit is reached
    const held = e.get(s, 'w')!
    assert.equal(held.msg.messageId, `m-${WINDOW + 2}`)
    await store.flush()
    // "kill -9": the store is not closed (its writer thread stays behind until the test ends)

    const store2 = openStore(dir)
    opened.push(store2)
    const e2 = engine(store2, {deliveryLimit: 3})
    const s2 = session(e2)
    const first = e2.get(s2, 'w')!
    assert.equal(first.msg.messageId, `m-${WINDOW + 2}`)
    assert.equal(first.msg.redelivered, true)
    assert.equal(first.msg.deliveryCount, 2)
    e2.nack(s2, first.deliveryTag, true)
    const third = e2.get(s2, 'w')!
    assert.equal(third.msg.deliveryCount, 3)
    e2.nack(s2, third.deliveryTag, true) // the third delivery was the limit
    assert.equal(e2.get(s2, 'w')!.msg.messageId, `m-${WINDOW + 3}`)
    const dlq = peekQueue(e2, 'w.dlq')
    assert.deepEqual(dlq.map((m) => m.messageId), [`m-${WINDOW}`, `m-${WINDOW + 1}`, `m-${WINDOW + 2}`])
    assert.equal(dlq[2].headers['x-death-reason'], 'delivery-limit')
    assert.equal(e2.queues.get('w')!.messages, 200 - WINDOW - 4)
  })
})

test('TTL: messages that expire while on disk are dead-lettered as expired, in order, and never delivered', async () => {
  await withHome(async (dir, opened) => {
    let now = 1_000_000
    const store = openStore(dir)
    opened.push(store)
    const e = engine(store, {now: () => now})
    e.declareQueue('t', {deadLetter: 't.dlq', durable: true, ttlMs: 60_000})
    for (const id of ids(150, 'old')) e.publish('', 't', Buffer.from(id), {messageId: id})
    now += 30_000
    for (const id of ids(100, 'new')) e.publish('', 't', Buffer.from(id), {messageId: id})
    await store.close()
    now += 40_000 // the first 150 are past their TTL, the next 100 not
    const store2 = openStore(dir)
    opened.push(store2)
    const e2 = engine(store2, {now: () => now})
    const live = peekQueue(e2, 't')
    assert.deepEqual(live.map((m) => m.messageId), ids(100, 'new'))
    assert.equal(e2.messageStatus('old-149')?.status, 'dead-lettered')
    const dead = peekQueue(e2, 't.dlq')
    assert.deepEqual(dead.map((m) => m.messageId), ids(150, 'old'))
    assert.ok(dead.every((m) => m.headers['x-death-reason'] === 'expired'))
  })
})

test('max-length: the oldest messages make room even when they are on disk; the survivors come back after a restart', async () => {
  await withHome(async (dir, opened) => {
    const store = openStore(dir)
    opened.push(store)
    const e = engine(store)
    e.declareQueue('ml', {deadLetter: 'ml.dlq', durable: true, maxLength: 120})
    for (const id of ids(300)) e.publish('', 'ml', Buffer.from(id), {messageId: id})
    assert.equal(e.queues.get('ml')!.messages, 120)
    await store.close()
    const store2 = openStore(dir)
    opened.push(store2)
    const e2 = engine(store2)
    assert.deepEqual(peekQueue(e2, 'ml').map((m) => m.messageId), ids(300).slice(180))
    const dropped = peekQueue(e2, 'ml.dlq')
    assert.deepEqual(dropped.map((m) => m.messageId), ids(180))
    assert.ok(dropped.every((m) => m.headers['x-death-reason'] === 'maxlen'))
  })
})

test('purge and delete take the paged-out part too, on disk', async () => {
  await withHome(async (dir, opened) => {
    const store = openStore(dir)
    opened.push(store)
    const e = engine(store)
    e.declareQueue('p', {durable: true})
    e.declareQueue('d', {durable: true})
    for (const id of ids(300)) {
      e.publish('', 'p', Buffer.from(id))
      e.publish('', 'd', Buffer.from(id))
    }
    assert.equal(e.purgeQueue('p'), 300)
    assert.equal(e.deleteQueue('d'), 300)
    e.publish('', 'p', Buffer.from('after'), {messageId: 'after'})
    await store.close()
    const store2 = openStore(dir)
    opened.push(store2)
    const e2 = engine(store2)
    assert.deepEqual(peekQueue(e2, 'p').map((m) => m.messageId), ['after'])
    assert.equal(e2.queues.has('d'), false)
    assert.equal((store2.db.prepare('SELECT COUNT(*) AS n FROM messages').get() as {n: number}).n, 1)
  })
})

test('non-durable queues have a hard byte limit: reject-publish refuses with E_QUEUE_FULL, drop-head moves the oldest to the dead-letter queue', () => {
  const e = new Engine({transientMaxBytes: 1000})
  e.declareQueue('r')
  for (let i = 0; i < 10; i++) e.publish('', 'r', Buffer.alloc(100, i))
  assert.throws(
    () => e.publish('', 'r', Buffer.alloc(1)),
    (err: MqError) => err.code === 'E_QUEUE_FULL' && /queue "r" is full: 1000 bytes ready, limit 1000/.test(err.message) && err.exit === 75,
  )
  assert.equal(e.queues.get('r')!.messages, 10)

  const d = new Engine({transientMaxBytes: 1000, transientOverflow: 'drop-head'})
  d.declareQueue('h', {deadLetter: 'h.dlq'})
  for (let i = 0; i < 15; i++) d.publish('', 'h', Buffer.alloc(100, i), {messageId: `h-${i}`})
  assert.deepEqual(peekQueue(d, 'h').map((m) => m.messageId), ids(15, 'h').slice(5))
  const dead = peekQueue(d, 'h.dlq')
  assert.deepEqual(dead.map((m) => [m.messageId, m.headers['x-death-reason']]), ids(5, 'h').map((id) => [id, 'overflow']))
})

test('by default a durable backlog keeps at most 2,500 messages in memory (the broker stays small while a backlog drains)', async () => {
  await withHome(async (dir, opened) => {
    const store = openStore(dir)
    opened.push(store)
    const e = new Engine({store})
    e.declareQueue('backlog', {durable: true})
    for (const id of ids(3_000)) e.publish('', 'backlog', Buffer.from(`body of ${id}`), {messageId: id})
    const st = e.listQueues().find((x) => x.name === 'backlog')!
    assert.equal(st.messages, 3_000)
    assert.equal(st.memoryMessages, 2_500)
  })
})
