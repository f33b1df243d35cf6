import assert from 'node:assert/strict'
import {test} from 'node:test'

import {PACKED_FIELD, entryMessage, packMessage} from '../../../../src/lib/broker/cluster/entry.js'
import type {Message} from '../../../../src/lib/broker/message.js'
import {MqError} from '../../../../src/lib/errors.js'
import {NO_HEADERS} from '../../../../src/lib/wire/protocol.js'

const b = (s: string) => Buffer.from(s)

function message(over: Partial<Message> = {}): Message {
  return {body: Buffer.from([0, 1, 2, 255, 0x0d, 0x0a]), deliveryCount: 0, exchange: 'orders.ex', expiresAt: 0, headers: {'x-a': 'ü 1', 'x-death-queue': 'q'}, messageId: 'id-ä-☃', redelivered: false, routingKey: 'eu.créé', seq: 0, timestamp: 1_765_086_000_123, idHash1: 0, idHash2: 0, ...over}
}

test('a packed entry reads back as the message it was made from (UTF-8 names, binary body, headers), with the queue fields x, d, r', () => {
  const m = message()
  const p = packMessage(m)
  const got = entryMessage([b(PACKED_FIELD), p, b('x'), b('1765086000999'), b('d'), b('2'), b('r'), b('1')])
  assert.deepEqual(got, {...m, deliveryCount: 2, expiresAt: 1_765_086_000_999, redelivered: true})
  // the scripts read the message id at byte 10 (Lua struct.unpack('>I4c0', p, 10)) and the timestamp at byte 2 ('>d')
  const n = p.readUInt32BE(9)
  assert.equal(p.toString('utf8', 13, 13 + n), m.messageId)
  assert.equal(p.readDoubleBE(1), m.timestamp)
})

test('a packed entry without headers, exchange or body', () => {
  const m = message({body: Buffer.alloc(0), exchange: '', headers: NO_HEADERS as Record<string, string>})
  const got = entryMessage([b('p'), packMessage(m)])
  assert.equal(got.headers, NO_HEADERS, 'no headers object made')
  assert.equal(got.exchange, '')
  assert.equal(got.body.length, 0)
  assert.equal(got.messageId, m.messageId)
})

test('an entry of the older layout (one field per property, written before the packed one) still reads', () => {
  const got = entryMessage([b('m'), b('old-1'), b('e'), b(''), b('k'), b('jobs'), b('t'), b('1700000000000'), b('b'), b('body'), b('h'), b('{"x-death-queue":"jobs"}'), b('x'), b('1700000001000'), b('d'), b('3'), b('r'), b('1')])
  assert.deepEqual(got, {body: b('body'), deliveryCount: 3, exchange: '', expiresAt: 1_700_000_001_000, headers: {'x-death-queue': 'jobs'}, idHash1: 0, idHash2: 0, messageId: 'old-1', redelivered: true, routingKey: 'jobs', seq: 0, timestamp: 1_700_000_000_000})
  const plain = entryMessage([b('m'), b('old-2'), b('e'), b('ex'), b('k'), b('rk'), b('t'), b('5'), b('b'), b('x')])
  assert.equal(plain.headers, NO_HEADERS)
  assert.equal(plain.deliveryCount, 0)
  assert.equal(plain.redelivered, false)
})

test('a malformed packed value is refused with a clear error, not read as garbage', () => {
  const p = packMessage(message())
  const bad = (v: Buffer) => assert.throws(() => entryMessage([b('p'), v]), (e: unknown) => e instanceof MqError && e.code === 'E_CLUSTER_ENTRY')
  bad(Buffer.concat([Buffer.from([2]), p.subarray(1)]))
  bad(p.subarray(0, 30))
  bad(p.subarray(0, 5))
  const long = Buffer.from(p)
  long.writeUInt32BE(0xffff_fff0, 9)
  bad(long)
})
