import assert from 'node:assert/strict'
import {test} from 'node:test'

import {Engine} from '../../../src/lib/broker/engine.js'
import {DurableStore} from '../../../src/lib/broker/store.js'
import {tempHome} from '../../helpers/home.js'

test('durable queues, bindings and messages (headers, binary, unicode, delivery counts) survive a reopen; acked ones do not', async () => {
  const h = tempHome()
  try {
    const store = new DurableStore(h.dir, 0)
    const e = new Engine({store})
    e.declareExchange('ex', 'topic')
    e.declareQueue('q.u', {deadLetter: 'q.dlq', durable: true, maxLength: 100, ttlMs: 3_600_000})
    e.declareQueue('mem')
    e.bind('q.u', 'ex', 'a.#')
    const body = Buffer.from([0, 255, 10, 13, 37, 61])
    const kept = e.publish('ex', 'a.b', body, {headers: {'trace-id': 'x y=z', 'uni.code': 'cödé'}, messageId: 'keep-1'})
    e.publish('ex', 'a.c', Buffer.from('gone'), {messageId: 'ack-1'})
    e.publish('', 'mem', Buffer.from('not durable'))
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    const d1 = e.get(s, 'q.u')! // keep-1: delivered, not acked
    const d2 = e.get(s, 'q.u')!
    assert.equal(d2.msg.messageId, 'ack-1')
    e.ack(s, d2.deliveryTag)
    assert.equal(d1.msg.messageId, 'keep-1')
    await store.flush()
    await store.close()

    const store2 = new DurableStore(h.dir, 0)
    const e2 = new Engine({store: store2})
    assert.deepEqual(e2.listQueues().map((q) => q.name), ['default_queue', 'q.dlq', 'q.u'])
    const q = e2.queues.get('q.u')!
    assert.equal(q.deadLetter, 'q.dlq')
    assert.equal(q.maxLength, 100)
    assert.deepEqual(e2.publish('ex', 'a.z', Buffer.from('routed')).queues, ['q.u'])
    const s2 = e2.openSession('c', {deliver: () => {}, writable: () => true})
    const r = e2.get(s2, 'q.u')!
    assert.equal(r.msg.messageId, kept.messageId)
    assert.deepEqual(r.msg.body, body)
    assert.deepEqual(r.msg.headers, {'trace-id': 'x y=z', 'uni.code': 'cödé'})
    assert.equal(r.msg.redelivered, true)
    assert.equal(r.msg.deliveryCount, 2)
    assert.equal(e2.get(s2, 'q.u')!.msg.body.toString(), 'routed')
    assert.equal(e2.get(s2, 'q.u'), null)
    await store2.close()
  } finally {
    h.cleanup()
  }
})
