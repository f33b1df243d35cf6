import assert from 'node:assert/strict'
import {join} from 'node:path'
import {test} from 'node:test'

import Database from 'better-sqlite3'

import {DedupeBlocks, DedupeWindow} from '../../../src/lib/broker/dedupe.js'
import {Engine} from '../../../src/lib/broker/engine.js'
import {DurableStore} from '../../../src/lib/broker/store.js'
import {peekQueue} from '../../helpers/engine.js'
import {tempHome} from '../../helpers/home.js'

const body = (s: string) => Buffer.from(s)
const opened: DurableStore[] = []
const openStore = (dir: string) => {
  const s = new DurableStore(join(dir, 'data'), 0, {keyFile: join(dir, 'secrets', 'broker.key')})
  opened.push(s)
  return s
}
/** closes what a failed test left open (close() is idempotent) */
const closeAll = async () => {
  for (const s of opened.splice(0)) await s.close()
}
const publishedRows = (dir: string) => {
  const db = new Database(join(dir, 'data', 'broker.db'), {readonly: true})
  try {
    const blocks = db.prepare('SELECT ids FROM published_blocks ORDER BY first').all() as {ids: string}[]
    return blocks.flatMap((b) => (JSON.parse(b.ids) as [number, string][]).map((x) => x[1]))
  } finally {
    db.close()
  }
}

test('a deduplicated publish of an id already published is answered as a duplicate and stored once; settle() ends that', () => {
  const e = new Engine()
  e.declareQueue('q')
  const first = e.publish('', 'q', body('one'), {dedupe: true, messageId: 'm-1'})
  assert.equal(first.duplicate, undefined)
  const again = e.publish('', 'q', body('one'), {dedupe: true, messageId: 'm-1'})
  assert.deepEqual([again.duplicate, again.queues], [true, ['q']])
  assert.equal(e.queues.get('q')!.ready.length, 1)
  // only publishes that ask for it are deduplicated
  e.publish('', 'q', body('plain'), {messageId: 'm-1'})
  assert.equal(e.queues.get('q')!.ready.length, 2)
  assert.equal(e.settlePublished('m-1'), true)
  assert.equal(e.settlePublished('m-1'), false)
  assert.equal(e.publish('', 'q', body('one'), {dedupe: true, messageId: 'm-1'}).duplicate, undefined)
  assert.equal(e.queues.get('q')!.ready.length, 3)
})

test('the window is bounded: the oldest ids beyond dedupe_max, and ids older than dedupe_window_ms, are forgotten', () => {
  let now = 1_000_000
  const e = new Engine({dedupeMax: 2, dedupeWindowMs: 60_000, now: () => now})
  e.declareQueue('q')
  for (const id of ['a', 'b', 'c']) e.publish('', 'q', body(id), {dedupe: true, messageId: id})
  assert.equal(e.dedupe.size, 2)
  assert.equal(e.publish('', 'q', body('a'), {dedupe: true, messageId: 'a'}).duplicate, undefined, 'a was the oldest of three with room for two')
  assert.equal(e.publish('', 'q', body('c'), {dedupe: true, messageId: 'c'}).duplicate, true)
  now += 60_001
  assert.equal(e.publish('', 'q', body('c'), {dedupe: true, messageId: 'c'}).duplicate, undefined, 'c is older than the window')
  // settled ids free their place at once, whatever their age
  const w = new DedupeWindow({max: 3, windowMs: 60_000})
  for (let i = 0; i < 5000; i++) {
    w.add(`x${i}`, ['q'], false)
    if (i !== 7) w.settle(`x${i}`)
  }
  assert.equal(w.size, 1)
  assert.ok(w.get('x7'))
})

test('a block row goes once all its ids are forgotten, in any order', () => {
  const b = new DedupeBlocks()
  b.add(1, 3, 3)
  b.add(5, 5, 1) // seq 4 was a memory-only publish: no id in any block
  b.add(6, 9, 4)
  assert.equal(b.forget(7), undefined)
  assert.equal(b.forget(4), undefined)
  assert.equal(b.forget(5), 5)
  assert.equal(b.forget(5), undefined, 'a block is deleted once')
  for (const seq of [3, 1]) assert.equal(b.forget(seq), undefined)
  assert.equal(b.forget(2), 1)
  for (const seq of [6, 8]) assert.equal(b.forget(seq), undefined)
  assert.equal(b.forget(9), 6)
  assert.equal(b.size, 0)
  for (let i = 0; i < 5000; i++) b.add(100 + 2 * i, 101 + 2 * i, 2)
  for (let i = 4999; i >= 0; i--) {
    assert.equal(b.forget(101 + 2 * i), undefined)
    assert.equal(b.forget(100 + 2 * i), 100 + 2 * i)
  }
  assert.equal(b.size, 0)
  // one long-lived id at the head: the emptied blocks behind it are dropped, lookups stay right
  b.add(20_000, 20_000, 1)
  for (let i = 1; i <= 3000; i++) b.add(20_000 + i, 20_000 + i, 1)
  for (let i = 1; i <= 3000; i++) assert.equal(b.forget(20_000 + i), 20_000 + i)
  assert.equal(b.size, 1)
  assert.equal(b.forget(20_000), 20_000)
  assert.equal(b.size, 0)
})

test('after a crash between a durable publish and the publisher\'s record, the retried publish is recognised, even once the message was consumed', async () => {
  const h = tempHome()
  try {
    const store = openStore(h.dir)
    const e = new Engine({store})
    e.declareQueue('dq', {durable: true})
    e.declareQueue('mq')
    // each group commit writes its ids as one block row
    const r = e.publish('', 'dq', body('durable'), {dedupe: true, messageId: 'd-1'})
    assert.equal(r.durable, true)
    await store.flush()
    e.publish('', 'dq', body('settled'), {dedupe: true, messageId: 'd-2'})
    e.publish('', 'mq', body('memory only'), {dedupe: true, messageId: 'm-1'})
    await store.flush()
    e.publish('', 'dq', body('three'), {dedupe: true, messageId: 'd-3'})
    e.publish('', 'dq', body('four'), {dedupe: true, messageId: 'd-4'})
    // consumed and acknowledged before the crash: the message row is gone, the id must not be
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    const got = e.get(s, 'dq')!
    assert.equal(got.msg.messageId, 'd-1')
    e.ack(s, got.deliveryTag)
    await store.flush()
    e.settlePublished('d-2')
    await store.flush()
    assert.deepEqual(publishedRows(h.dir), ['d-1', 'd-3', 'd-4'])
    // "kill -9": the first store is never closed; a new broker opens the same files
    const store2 = openStore(h.dir)
    const e2 = new Engine({store: store2})
    const dup = e2.publish('', 'dq', body('durable'), {dedupe: true, messageId: 'd-1'})
    assert.deepEqual([dup.duplicate, dup.queues, dup.durable], [true, ['dq'], true])
    const q = e2.queues.get('dq')!
    assert.equal(q.messages, 3)
    assert.deepEqual(peekQueue(e2, 'dq').map((m) => m.messageId), ['d-2', 'd-3', 'd-4'])
    assert.equal(e2.publish('', 'dq', body('four'), {dedupe: true, messageId: 'd-4'}).duplicate, true)
    // memory-only publishes are remembered in memory only: that copy died with the broker
    e2.declareQueue('mq')
    assert.equal(e2.publish('', 'mq', body('memory only'), {dedupe: true, messageId: 'm-1'}).duplicate, undefined)
    // the settled id was forgotten on disk too
    assert.equal(e2.publish('', 'dq', body('settled'), {dedupe: true, messageId: 'd-2'}).duplicate, undefined)
    for (const id of ['d-1', 'd-2', 'd-3', 'd-4']) e2.settlePublished(id)
    await store2.close()
    await store.close()
    assert.deepEqual(publishedRows(h.dir), [])
  } finally {
    await closeAll()
    h.cleanup()
  }
})

test('ids older than the window are dropped from broker.db at the next start', async () => {
  const h = tempHome()
  try {
    let now = 5_000_000
    const store = openStore(h.dir)
    const e = new Engine({dedupeWindowMs: 10_000, now: () => now, store})
    e.declareQueue('dq', {durable: true})
    e.publish('', 'dq', body('old'), {dedupe: true, messageId: 'old'})
    await store.flush()
    now += 5000
    e.publish('', 'dq', body('new'), {dedupe: true, messageId: 'new'})
    await store.close()
    now += 6000
    const store2 = openStore(h.dir)
    const e2 = new Engine({dedupeWindowMs: 10_000, now: () => now, store: store2})
    assert.equal(e2.dedupe.size, 1)
    assert.equal(e2.publish('', 'dq', body('new'), {dedupe: true, messageId: 'new'}).duplicate, true)
    await store2.close()
    assert.deepEqual(publishedRows(h.dir), ['new'])
  } finally {
    await closeAll()
    h.cleanup()
  }
})
