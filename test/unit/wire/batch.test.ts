import assert from 'node:assert/strict'
import net from 'node:net'
import {test} from 'node:test'

import {BrokerClient, type Delivery} from '../../../src/lib/client/client.js'
import {resolvePermissions} from '../../../src/lib/broker/permissions.js'
import {type BatchDelivery, DeliveryBatchWriter, FrameError, FrameParser, type Frame, PublishBatchWriter, parseDeliveries, parsePublishBatch} from '../../../src/lib/wire/protocol.js'
import {startPlainServer} from '../../helpers/broker.js'

const allowAll = (id: string) => resolvePermissions([{admin: true, consume: ['*'], identity: '*', publish: ['*'], roles: []}], id)

test('PUBLISH_BATCH and DELIVERS bodies round-trip binary bodies, ids and flags; a body that does not add up is refused', () => {
  const w = new PublishBatchWriter()
  w.start('ex', 'ключ key')
  assert.ok(w.add('id-1', Buffer.from([0, 10, 255])))
  assert.ok(w.add(undefined, Buffer.alloc(0)))
  const frame = w.frame(7)
  const frames: Frame[] = []
  new FrameParser(1 << 20).push(frame, (f) => frames.push(f), (e) => assert.fail(e.message))
  assert.equal(frames.length, 1)
  const f = frames[0]
  assert.equal(f.verb, 'PUBLISH_BATCH')
  assert.equal(f.id, 7)
  assert.deepEqual(f.args, {count: '2', exchange: 'ex', key: 'ключ key'})
  const {bodies, ids} = parsePublishBatch(f.body, 2, 7)
  assert.deepEqual(ids, ['id-1', undefined])
  assert.deepEqual(bodies, [Buffer.from([0, 10, 255]), Buffer.alloc(0)])
  assert.throws(() => parsePublishBatch(f.body, 3, 7), (e: FrameError) => e.code === 'E_FRAME_BODY' && /record 3 of 3 is missing/.test(e.message) && !e.fatal)
  assert.throws(() => parsePublishBatch(f.body, 1, 7), (e: FrameError) => e.code === 'E_FRAME_BODY' && /bytes after the 1 records/.test(e.message))

  const d = new DeliveryBatchWriter()
  d.start('ctag-1')
  d.add(2 ** 40 + 5, true, 3, 1_795_000_000_000, '', 'k', 'm-1', Buffer.from('a'))
  d.add(6, false, 1, 1, 'ex', 'k2', 'm-2', Buffer.from('bb'))
  const df: Frame[] = []
  new FrameParser(1 << 20).push(d.frame(), (x) => df.push(x), (e) => assert.fail(e.message))
  assert.equal(df[0].verb, 'DELIVERS')
  assert.equal(df[0].args.consumer, 'ctag-1')
  const got: BatchDelivery[] = []
  parseDeliveries(df[0].body, Number(df[0].args.count), (r) => got.push({...r, body: Buffer.from(r.body)}))
  assert.deepEqual(got, [
    {body: Buffer.from('a'), count: 3, exchange: '', key: 'k', messageId: 'm-1', redelivered: true, tag: 2 ** 40 + 5, ts: 1_795_000_000_000},
    {body: Buffer.from('bb'), count: 1, exchange: 'ex', key: 'k2', messageId: 'm-2', redelivered: false, tag: 6, ts: 1},
  ])
  assert.throws(() => parseDeliveries(df[0].body.subarray(0, 30), 2, () => {}), (e: FrameError) => e.code === 'E_FRAME_BODY')
})

test('DELIVERS records that share, nearly share or differ in exchange and key decode each to its own names', () => {
  const long = 'x'.repeat(70)
  const names: [string, string][] = [
    ['orders', 'eu.1'],
    ['orders', 'eu.1'],
    ['orderz', 'eu.2'], // same lengths, different bytes
    ['orders', 'eu.1'],
    ['', ''],
    ['ключ', 'é.1'], // non-ASCII takes the encoder
    ['ключ', 'é.1'],
    [long, long + 'y'],
    [long, long + 'z'],
  ]
  const d = new DeliveryBatchWriter()
  d.start('c')
  names.forEach(([ex, key], i) => assert.ok(d.add(i + 1, false, 1, 1, ex, key, `id-${i}-é`, Buffer.from([i]))))
  const f: Frame[] = []
  new FrameParser(1 << 20).push(d.frame(), (x) => f.push(x), (e) => assert.fail(e.message))
  const got: [string, string, string][] = []
  parseDeliveries(f[0].body, names.length, (r) => got.push([r.exchange, r.key, r.messageId]))
  assert.deepEqual(
    got,
    names.map(([ex, key], i) => [ex, key, `id-${i}-é`]),
  )
})

test('batches cut from one writer stay intact: later batches, a dropped batch and one outgrowing its slab never touch a frame handed out', () => {
  const w = new PublishBatchWriter()
  const frames: {frame: Buffer; copy: Buffer; bodies: Buffer[]}[] = []
  const sizes = [1, 3, 200, 1, 40_000, 2, 70_000, 5]
  sizes.forEach((n, i) => {
    w.start('ex', `k${i}`)
    const bodies = [Buffer.alloc(n, i + 1), Buffer.from(`second ${i}`)]
    for (const b of bodies) assert.ok(w.add(`id-${i}`, b))
    if (i === 3) {
      // dropped: its bytes are reused by the next batch
      w.reset()
      return
    }
    const frame = w.frame(i + 1)
    frames.push({bodies, copy: Buffer.from(frame), frame})
  })
  for (const {frame, copy, bodies} of frames) {
    assert.ok(frame.equals(copy), 'a frame changed after it was handed out')
    const got: Frame[] = []
    new FrameParser(1 << 20).push(frame, (x) => got.push(x), (e) => assert.fail(e.message))
    assert.deepEqual(parsePublishBatch(got[0].body, 2, got[0].id).bodies, bodies)
  }
  assert.equal(frames.length, sizes.length - 1)
})

/** A hand-typed session on a raw socket: what `openssl s_client` would show. */
async function raw(port: number) {
  const s = net.connect({host: '127.0.0.1', port})
  await new Promise((r) => s.once('connect', r))
  const frames: Frame[] = []
  const parser = new FrameParser(1 << 20)
  let wake: (() => void) | undefined
  s.on('data', (d: Buffer) => {
    parser.push(d, (f) => frames.push(f), () => {})
    wake?.()
  })
  const next = async (verb?: string): Promise<Frame> => {
    for (;;) {
      const i = frames.findIndex((f) => !verb || f.verb === verb)
      if (i >= 0) return frames.splice(i, 1)[0]
      await new Promise<void>((r) => {
        wake = r
        setTimeout(r, 2000)
      })
      if (s.destroyed) throw new Error('connection closed')
    }
  }
  return {next, s}
}

function batchBody(records: (string | Buffer)[]): Buffer {
  const parts: Buffer[] = []
  for (const r of records) {
    const b = Buffer.isBuffer(r) ? r : Buffer.from(r)
    const h = Buffer.alloc(6)
    h.writeUInt16BE(0, 0)
    h.writeUInt32BE(b.length, 2)
    parts.push(h, b)
  }
  return Buffer.concat(parts)
}

test('over the wire: a PUBLISH_BATCH is confirmed or refused whole; a bad one keeps the connection; batch=1 consumers get DELIVERS', async () => {
  const srv = await startPlainServer({permissionsFor: allowAll})
  try {
    const {next, s} = await raw(srv.port)
    s.write('HELLO 1 identity=hand batch=1\nDECLARE_QUEUE 2 name=bq\n')
    assert.equal((await next()).args.batch, '1', 'the broker says it understands batches')
    await next()
    const body = batchBody(['one', Buffer.from([0, 1, 2, 10]), 'three'])
    s.write(Buffer.concat([Buffer.from(`PUBLISH_BATCH 3 exchange= key=bq count=3 ${body.length}\n`), body, Buffer.from('\n')]))
    const ok = await next()
    assert.equal(ok.verb, 'OK')
    assert.equal(ok.id, 3)
    assert.deepEqual({count: ok.args.count, queues: ok.args.queues}, {count: '3', queues: 'bq'})
    assert.equal(srv.engine.queues.get('bq')!.ready.length, 3)

    // count says 4, the body holds 3: refused, nothing of it queued, the connection still answers
    s.write(Buffer.concat([Buffer.from(`PUBLISH_BATCH 4 exchange= key=bq count=4 ${body.length}\n`), body, Buffer.from('\nPING 5\n')]))
    const bad = await next()
    assert.equal(bad.verb, 'ERR')
    assert.equal(bad.id, 4)
    assert.equal(bad.args.code, 'E_FRAME_BODY')
    assert.match(bad.args.message, /record 4 of 4 is missing/)
    assert.equal((await next()).verb, 'PONG')
    // unroutable: the whole batch is refused
    s.write(Buffer.concat([Buffer.from(`PUBLISH_BATCH 6 exchange= key=nowhere count=3 ${body.length}\n`), body, Buffer.from('\n')]))
    const unroutable = await next()
    assert.equal(unroutable.args.code, 'E_UNROUTABLE')
    assert.equal(srv.engine.queues.get('bq')!.ready.length, 3)

    s.write('CONSUME 7 queue=bq prefetch=10 no_ack=1\n')
    const consumer = (await next('OK')).args.consumer
    const dl = await next('DELIVERS')
    assert.equal(dl.args.consumer, consumer)
    const got: string[] = []
    parseDeliveries(dl.body, Number(dl.args.count), (r) => got.push(r.body.toString('hex')))
    assert.deepEqual(got, [Buffer.from('one').toString('hex'), '0001020a', Buffer.from('three').toString('hex')])
    s.destroy()
  } finally {
    await srv.stop()
  }
})

test('the client batches a tick of publishes: each resolves with its own id, an unroutable batch rejects every publish in it, order and headers survive', async () => {
  const srv = await startPlainServer({permissionsFor: allowAll})
  const c = await BrokerClient.connect({batchConfirms: true, host: '127.0.0.1', plain: true, port: srv.port, tls: {}})
  try {
    await c.declareQueue('cq')
    const sent: Promise<{messageId: string}>[] = []
    for (let i = 0; i < 200; i++) sent.push(c.publish('', 'cq', Buffer.from(`m${i}`), i === 100 ? {headers: {trace: 'x y'}} : {}))
    const ids = (await Promise.all(sent)).map((r) => r.messageId)
    assert.equal(new Set(ids).size, 200, 'every publish has its own message id')
    assert.equal(srv.engine.totals.published, 200)

    const lost = await Promise.allSettled(Array.from({length: 5}, (_, i) => c.publish('', 'no-such-queue', Buffer.from(`x${i}`))))
    assert.deepEqual(lost.map((r) => r.status), ['rejected', 'rejected', 'rejected', 'rejected', 'rejected'])
    assert.ok(lost.every((r) => r.status === 'rejected' && (r.reason as {code: string}).code === 'E_UNROUTABLE'))

    const got: Delivery[] = []
    await new Promise<void>((resolve) => {
      void c.consume('cq', {prefetch: 500}, (d) => {
        got.push(d)
        c.ack(d.deliveryTag)
        if (got.length === 200) resolve()
      })
    })
    assert.deepEqual(got.map((d) => d.body.toString()), Array.from({length: 200}, (_, i) => `m${i}`))
    assert.deepEqual(got.map((d) => d.messageId), ids)
    assert.deepEqual(got[100].headers, {trace: 'x y'})
    assert.equal(got[5].queue, 'cq')
    await new Promise((r) => setTimeout(r, 50))
    assert.equal(srv.engine.queues.get('cq')!.unacked, 0, 'the acks of batched deliveries reached the broker')
  } finally {
    await c.close()
    await srv.stop()
  }
})
