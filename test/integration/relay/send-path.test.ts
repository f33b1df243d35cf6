import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {after, before, describe, test} from 'node:test'

import {Op, PULL_ENTRY_HEADER_BYTES, decodePullEntryHeader, encodeSendHeader} from '../../../src/lib/relay/protocol.js'
import {tempHome} from '../../helpers/home.js'
import {RawClient, type RunningRelay, type RawResponse, registerRaw, req, startRelay, watchCommits} from './harness.js'

const text = (from: Buffer, to: Buffer, body: Buffer, type = 3): Buffer => req(3, from, Op.send, Buffer.concat([encodeSendHeader(to, type, body.length), body]))

function entries(r: RawResponse): {from: string; id: number; type: number; body: string}[] {
  const out = []
  for (let at = 0; at < r.payload.length; ) {
    const e = decodePullEntryHeader(r.payload.subarray(at, at + PULL_ENTRY_HEADER_BYTES))
    at += PULL_ENTRY_HEADER_BYTES
    out.push({body: r.payload.subarray(at, at + e.size).toString(), from: e.sender.toString('hex'), id: e.messageId, type: e.type})
    at += e.size
  }
  return out
}

/**
 * v3 texts take the relay's short path (a whole frame at hand, ids remembered per connection):
 * what a client sees must be what the general path gives, whoever sends to whom on a connection,
 * however the bytes arrive, and whatever is wrong with a request.
 */
describe('relay server: v3 texts on one connection', () => {
  const home = tempHome('mq-relay-send-')
  let relay: RunningRelay

  before(async () => {
    relay = await startRelay({home: home.dir, maxTextBytes: 1000})
  })
  after(async () => {
    await relay.stop()
    home.cleanup()
  })

  test('two senders and two recipients interleaved: each ack names its recipient, each pull shows the right sender', async () => {
    const c = await RawClient.connect(relay.port)
    try {
      const [a, b, x, y] = [await registerRaw(c, 3, 'sp-a'), await registerRaw(c, 3, 'sp-b'), await registerRaw(c, 3, 'sp-x'), await registerRaw(c, 3, 'sp-y')]
      const plan: [Buffer, Buffer, string][] = [
        [a, x, 'a->x 1'],
        [a, x, 'a->x 2'],
        [b, x, 'b->x'],
        [a, y, 'a->y'],
        [b, y, 'b->y'],
        [a, x, 'a->x 3'],
        [b, b, ''],
      ]
      const ids: number[] = []
      for (const [from, to, body] of plan) {
        c.write(text(from, to, Buffer.from(body)))
        const r = await c.response()
        assert.equal(r.code, 2103)
        assert.equal(r.version, 3)
        assert.deepEqual(r.payload.subarray(0, 16), to, 'the ack names the recipient')
        ids.push(r.payload.readUInt32LE(16))
      }
      assert.deepEqual([...ids].sort((p, q) => p - q), ids)
      const pull = async (who: Buffer) => {
        c.write(req(3, who, Op.pull))
        const r = await c.response()
        assert.equal(r.code, 2104)
        return entries(r)
      }
      assert.deepEqual(await pull(x), [
        {body: 'a->x 1', from: a.toString('hex'), id: ids[0], type: 3},
        {body: 'a->x 2', from: a.toString('hex'), id: ids[1], type: 3},
        {body: 'b->x', from: b.toString('hex'), id: ids[2], type: 3},
        {body: 'a->x 3', from: a.toString('hex'), id: ids[5], type: 3},
      ])
      assert.deepEqual(await pull(y), [
        {body: 'a->y', from: a.toString('hex'), id: ids[3], type: 3},
        {body: 'b->y', from: b.toString('hex'), id: ids[4], type: 3},
      ])
      assert.deepEqual(await pull(b), [{body: '', from: b.toString('hex'), id: ids[6], type: 3}])
    } finally {
      c.close()
    }
  })

  test('pipelined, split and refused texts: acks in order, 9000s that keep the connection, nothing stored for a refusal', async () => {
    const c = await RawClient.connect(relay.port)
    try {
      const a = await registerRaw(c, 3, 'sp2-a')
      const b = await registerRaw(c, 3, 'sp2-b')
      // three texts in one write
      c.write(Buffer.concat([text(a, b, Buffer.from('one')), text(a, b, Buffer.from('two')), text(a, b, Buffer.from('three'))]))
      const acks = [await c.response(), await c.response(), await c.response()]
      assert.deepEqual(acks.map((r) => r.code), [2103, 2103, 2103])
      // one text a few bytes at a time
      const split = text(a, b, Buffer.from('split'))
      for (let at = 0; at < split.length; at += 7) {
        c.write(split.subarray(at, at + 7))
        await new Promise((r) => setTimeout(r, 2))
      }
      assert.equal((await c.response()).code, 2103)
      // after texts to a known recipient: an unknown recipient, an unknown sender, too long, a bad type, a size that lies
      c.write(text(a, randomBytes(16), Buffer.from('nobody')))
      assert.equal((await c.response()).code, 9000)
      c.write(text(randomBytes(16), b, Buffer.from('stranger')))
      assert.equal((await c.response()).code, 9000)
      c.write(text(a, b, Buffer.alloc(1001, 0x61)))
      assert.equal((await c.response()).code, 9000)
      c.write(text(a, b, Buffer.from('bad type'), 9))
      assert.equal((await c.response()).code, 9000)
      const lying = text(a, b, Buffer.from('liar'))
      lying.writeUInt32LE(99, 23 + 17)
      c.write(lying)
      assert.equal((await c.response()).code, 9000)
      // the connection still works, and only the good texts were stored
      c.write(text(a, b, Buffer.from('after')))
      assert.equal((await c.response()).code, 2103)
      c.write(req(3, b, Op.pull))
      const r = await c.response()
      assert.deepEqual(entries(r).map((e) => e.body), ['one', 'two', 'three', 'split', 'after'])
    } finally {
      c.close()
    }
  })

  test('texts pipelined on one connection share one commit; each ack, in order, names its recipient and id', async () => {
    const c = await RawClient.connect(relay.port)
    const commits = watchCommits(relay.store)
    const batches = commits.sizes
    try {
      const a = await registerRaw(c, 3, 'sp3-a')
      const x = await registerRaw(c, 3, 'sp3-x')
      const y = await registerRaw(c, 3, 'sp3-y')
      // first contact goes the general way (the sender's last_seen, the recipients looked up): done here
      for (const to of [x, y]) {
        c.write(text(a, to, Buffer.from('hello')))
        assert.equal((await c.response()).code, 2103)
      }
      for (const who of [x, y]) {
        c.write(req(3, who, Op.pull))
        assert.equal(entries(await c.response()).length, 1)
      }
      batches.length = 0
      const plan: [Buffer, string][] = [[x, 'p1'], [y, 'p2'], [x, 'p3'], [x, 'p4'], [y, 'p5']]
      c.write(Buffer.concat(plan.map(([to, body]) => text(a, to, Buffer.from(body)))))
      const acks = []
      for (const [to] of plan) {
        const r = await c.response()
        assert.equal(r.code, 2103)
        assert.deepEqual(r.payload.subarray(0, 16), to, 'each ack names its own recipient')
        acks.push(r.payload.readUInt32LE(16))
      }
      // (the first may go the general way on a slow machine, its sender's last_seen a second old)
      assert.ok(Math.max(0, ...batches) >= plan.length - 1, `the pipelined texts share a commit: batches ${JSON.stringify(batches)}`)
      assert.equal(new Set(acks).size, acks.length)
      assert.deepEqual([...acks].sort((p, q) => p - q), acks, 'ids in arrival order')
      // a refusal inside a pipeline: the texts before it are stored and acknowledged, then its 9000, then the rest
      batches.length = 0
      c.write(Buffer.concat([text(a, x, Buffer.from('q1')), text(a, randomBytes(16), Buffer.from('nobody')), text(a, y, Buffer.from('q2'))]))
      assert.deepEqual([(await c.response()).code, (await c.response()).code, (await c.response()).code], [2103, 9000, 2103])
      c.write(req(3, x, Op.pull))
      assert.deepEqual(entries(await c.response()).map((e) => [e.body, e.id]), [['p1', acks[0]], ['p3', acks[2]], ['p4', acks[3]], ['q1', acks[4] + 1]])
      c.write(req(3, y, Op.pull))
      assert.deepEqual(entries(await c.response()).map((e) => e.body), ['p2', 'p5', 'q2'])
      // a long pipeline: every text acknowledged, in order, in commits of at most 64
      batches.length = 0
      c.write(Buffer.concat(Array.from({length: 150}, (_, i) => text(a, x, Buffer.from(`r${i}`)))))
      const ids = []
      for (let i = 0; i < 150; i++) {
        const r = await c.response()
        assert.equal(r.code, 2103)
        ids.push(r.payload.readUInt32LE(16))
      }
      assert.deepEqual([...ids].sort((p, q) => p - q), ids)
      assert.ok(batches.length > 0 && Math.max(...batches) <= 64, `batches ${JSON.stringify(batches)}`)
      c.write(req(3, x, Op.pull))
      assert.deepEqual(entries(await c.response()).map((e) => e.body), Array.from({length: 150}, (_, i) => `r${i}`))
    } finally {
      commits.restore()
      c.close()
    }
  })
})
