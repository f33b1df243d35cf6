import assert from 'node:assert/strict'
import {randomUUID} from 'node:crypto'
import net from 'node:net'
import {test} from 'node:test'

import {BrokerClient, type Delivery} from '../../../src/lib/client/client.js'
import {resolvePermissions} from '../../../src/lib/broker/permissions.js'
import {BATCH_BYTES, type BatchDelivery, DeliveryBatchWriter, FrameError, FrameParser, type Frame, PublishBatchWriter, encodeFrame, encodeHeaderArgs, frameHeaders, parseDeliveries, parsePublishBatch, sameHeaders} from '../../../src/lib/wire/protocol.js'
import {MessageIds} from '../../../src/lib/wire/ids.js'
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

test('DELIVERS message ids that share a prefix (counter ids), then differ in it, in length or in script, each decode to their own id; tags and timestamps keep all 48 bits', () => {
  const ids = new MessageIds()
  const counter = Array.from({length: 4100}, () => ids.next()) // crosses a carry of the high digits at 4096
  const mixed = [
    '0123456789abcdef-0001',
    '0123456789abcdef-0002',
    '0123456789abcdef-0002', // the same id twice
    '0123456789abcdef-1234567890', // a longer tail than is rebuilt
    '0123456789abcdef-0003',
    '0123456789abcdef-000é', // a non-ASCII tail
    '0123456789abcdef-0004',
    '0123456789abcdef-0éx', // a non-ASCII character in a tail of three bytes (the counter's length)
    '0123456789abcdef-0005',
    '0123456789abcdeé-0005', // a non-ASCII prefix
    '0123456789abcdeé-0006',
    '0123456789abcdXf-0007', // the prefix differs
    'short-1',
    'short-2',
    '',
    '0123456789abcdef-', // as long as the kept prefix of the id before it
    randomUUID(),
    randomUUID(),
  ]
  const all = [...counter, ...mixed]
  const d = new DeliveryBatchWriter()
  d.start('c')
  const big = 2 ** 48 - 1
  all.forEach((id, i) => assert.ok(d.add(i === 0 ? big : i + 1, false, i === 1 ? 2 ** 32 - 1 : 1, i === 0 ? big : 1_795_000_000_000 + i, '', 'q', id, Buffer.from([i & 0xff]))))
  const f: Frame[] = []
  new FrameParser(1 << 24).push(d.frame(), (x) => f.push(x), (e) => assert.fail(e.message))
  const got: BatchDelivery[] = []
  parseDeliveries(f[0].body, all.length, (r) => got.push(r))
  assert.deepEqual(
    got.map((r) => r.messageId),
    all,
  )
  assert.equal(got[0].tag, big)
  assert.equal(got[0].ts, big)
  assert.equal(got[1].count, 2 ** 32 - 1)
  assert.equal(got[5].ts, 1_795_000_000_005)
  // a record cut short inside a kept-prefix id is still refused
  assert.throws(() => parseDeliveries(f[0].body.subarray(0, 150), 4, () => {}), (e: FrameError) => e.code === 'E_FRAME_BODY')
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

test('batches of small records are written where they started: none outgrows its slab and is copied to a new one', () => {
  // closed the way the client and the broker close them: once the records reach BATCH_BYTES
  const pub = new PublishBatchWriter()
  const del = new DeliveryBatchWriter()
  const body = Buffer.alloc(256, 7)
  let seq = 0
  for (let batch = 0; batch < 12; batch++) {
    pub.start('', 'bench.memory.0a1b2c3d')
    del.start('c1')
    let pubSlab: ArrayBufferLike | undefined
    let delSlab: ArrayBufferLike | undefined
    const n0 = seq
    while (pub.bytes < BATCH_BYTES) {
      body.writeUInt32BE(seq, 0)
      assert.ok(pub.add(undefined, body))
      assert.ok(del.add(++seq, false, 1, 1_795_000_000_000 + seq, '', 'bench.memory.0a1b2c3d', `0b5c2e1a-7d3f-4c55-9e21-${String(seq).padStart(12, '0')}`, body))
      pubSlab ??= pub.records().buffer
      delSlab ??= del.records().buffer
    }
    const pf = pub.frame(batch + 1)
    const df = del.frame()
    assert.equal(pf.buffer, pubSlab, `PUBLISH_BATCH ${batch + 1} was moved to another slab`)
    assert.equal(df.buffer, delSlab, `DELIVERS ${batch + 1} was moved to another slab`)
    const frames: Frame[] = []
    const parser = new FrameParser(1 << 20)
    parser.push(pf, (f) => frames.push(f), (e) => assert.fail(e.message))
    parser.push(df, (f) => frames.push(f), (e) => assert.fail(e.message))
    const {bodies} = parsePublishBatch(frames[0].body, seq - n0, frames[0].id)
    assert.deepEqual(bodies.map((b) => b.readUInt32BE(0)), Array.from({length: seq - n0}, (_, i) => n0 + i))
    const tags: number[] = []
    parseDeliveries(frames[1].body, seq - n0, (d) => tags.push(d.tag))
    assert.deepEqual(tags, Array.from({length: seq - n0}, (_, i) => n0 + i + 1))
  }
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

// ---- messages with headers on the batched path (HELLO batch_headers=1) ---------------------------

/** header values that need every kind of encoding: spaces, =, %, newlines, non-ASCII */
const HEADERS = {'content-type': 'text/plain; charset=utf-8', 'trace.id': 'a b=c%d\n\té ключ', 'x-mq-format': 'native'}

test('batch frames carry their records\' shared headers as h.* on the line, byte-exact; bad names are refused before sending', () => {
  const w = new PublishBatchWriter()
  w.start('ex', 'k', encodeHeaderArgs(HEADERS))
  w.add('m1', Buffer.from('one'))
  w.add(undefined, Buffer.from('two'))
  const d = new DeliveryBatchWriter()
  d.start('ctag', encodeHeaderArgs(HEADERS))
  d.add(1, false, 1, 1, 'ex', 'k', 'm1', Buffer.from('one'))
  const frames: Frame[] = []
  new FrameParser(1 << 20).push(Buffer.concat([w.frame(3), d.frame()]), (f) => frames.push(f), (e) => assert.fail(e.message))
  assert.deepEqual(frameHeaders(frames[0].args), HEADERS)
  assert.equal(frames[0].args.count, '2')
  assert.deepEqual(parsePublishBatch(frames[0].body, 2, 3).ids, ['m1', undefined])
  assert.deepEqual(frameHeaders(frames[1].args), HEADERS)
  assert.equal(frames[1].args.count, '1')
  assert.throws(() => encodeHeaderArgs({'bad name': 'x'}), (e: FrameError) => e.code === 'E_FRAME_MALFORMED' && !e.fatal)
  assert.ok(sameHeaders({a: '1', b: '2'}, {b: '2', a: '1'}))
  assert.ok(!sameHeaders({a: '1'}, {a: '1', b: '2'}))
  assert.ok(!sameHeaders({a: '1', b: '2'}, {a: '1'}))
  assert.ok(!sameHeaders({a: '1'}, {a: '2'}))
})

/** A TCP relay between a client and the broker that records the verb of every frame each way; `strip` drops HELLO reply arguments (an older broker). */
async function frameCounter(port: number, strip: string[] = []) {
  const up: string[] = []
  const down: string[] = []
  const server = net.createServer((client) => {
    const broker = net.connect({host: '127.0.0.1', port})
    const fromClient = new FrameParser(1 << 26)
    const fromBroker = new FrameParser(1 << 26)
    client.on('data', (d: Buffer) => {
      fromClient.push(d, (f) => up.push(f.verb), () => up.push('error'))
      broker.write(d)
    })
    broker.on('data', (d: Buffer) => {
      if (strip.length === 0) {
        fromBroker.push(d, (f) => down.push(f.verb), () => down.push('error'))
        client.write(d)
        return
      }
      // re-encoded frame by frame so the HELLO reply can lose arguments
      fromBroker.push(
        d,
        (f) => {
          down.push(f.verb)
          if (f.verb === 'OK' && f.args.server === 'mq') for (const k of strip) delete f.args[k]
          client.write(encodeFrame(f.verb, f.id, f.args, f.body))
        },
        () => down.push('error'),
      )
    })
    client.on('close', () => broker.destroy())
    broker.on('close', () => client.destroy())
    client.on('error', () => {})
    broker.on('error', () => {})
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const count = (list: string[], verb: string) => list.filter((v) => v === verb).length
  return {close: () => new Promise<void>((r) => server.close(() => r())), count, down, port: (server.address() as net.AddressInfo).port, up}
}

async function roundTrip(port: number, n: number, headersOf: (i: number) => Record<string, string>, batchConfirms: boolean): Promise<Delivery[]> {
  const c = await BrokerClient.connect({batchConfirms, host: '127.0.0.1', plain: true, port, tls: {}})
  try {
    await c.declareQueue('hq')
    const sent: Promise<unknown>[] = []
    // without batch confirms only messages the caller names can share a batch (mq send names each)
    for (let i = 0; i < n; i++) sent.push(c.publish('', 'hq', Buffer.from(`m${i}`), {headers: headersOf(i), messageId: batchConfirms ? undefined : `id-${i}`}))
    if (!batchConfirms) assert.deepEqual((await Promise.all(sent)).map((r) => (r as {messageId: string}).messageId), Array.from({length: n}, (_, i) => `id-${i}`))
    await Promise.all(sent)
    const got: Delivery[] = []
    await new Promise<void>((resolve) => {
      void c.consume('hq', {prefetch: 1000}, (d) => {
        got.push(d)
        c.ack(d.deliveryTag)
        if (got.length === n) resolve()
      })
    })
    return got
  } finally {
    await c.close()
  }
}

test('messages with headers travel batched both ways: 300 publishes with one sender\'s headers take a handful of frames and arrive with their headers byte-exact', async () => {
  for (const batchConfirms of [true, false]) {
    const srv = await startPlainServer({permissionsFor: allowAll})
    const relay = await frameCounter(srv.port)
    try {
      const shared = {...HEADERS}
      const got = await roundTrip(relay.port, 300, () => shared, batchConfirms)
      assert.deepEqual(got.map((d) => d.body.toString()), Array.from({length: 300}, (_, i) => `m${i}`))
      for (const d of got) assert.deepEqual(d.headers, HEADERS)
      got[0].headers.changed = 'by the consumer'
      assert.deepEqual(got[1].headers, HEADERS, 'each delivery has its own headers object')
      // without batching this was 300 PUBLISH and 300 DELIVER frames
      assert.ok(relay.count(relay.up, 'PUBLISH') + relay.count(relay.up, 'PUBLISH_BATCH') <= 20, `client frames: ${relay.count(relay.up, 'PUBLISH')} PUBLISH, ${relay.count(relay.up, 'PUBLISH_BATCH')} PUBLISH_BATCH`)
      assert.ok(relay.count(relay.up, 'PUBLISH_BATCH') >= 1)
      assert.ok(relay.count(relay.down, 'DELIVER') + relay.count(relay.down, 'DELIVERS') <= 20, `broker frames: ${relay.count(relay.down, 'DELIVER')} DELIVER, ${relay.count(relay.down, 'DELIVERS')} DELIVERS`)
      assert.ok(!relay.up.includes('error') && !relay.down.includes('error'))
    } finally {
      await relay.close()
      await srv.stop()
    }
  }
})

test('headers that change from message to message close the batch: every message keeps its own headers, in order', async () => {
  const srv = await startPlainServer({permissionsFor: allowAll})
  try {
    const mutable: Record<string, string> = {k: 'v0'}
    const headersOf = (i: number): Record<string, string> => {
      if (i % 7 === 3) return {}
      if (i % 5 === 0) return {k: `own ${i}`, extra: 'e'}
      // one object changed in place between publishes: the client must not reuse what it encoded before
      mutable.k = `v${Math.floor(i / 10)}`
      return mutable
    }
    const expected = Array.from({length: 120}, (_, i) => {
      if (i % 7 === 3) return {}
      if (i % 5 === 0) return {extra: 'e', k: `own ${i}`}
      return {k: `v${Math.floor(i / 10)}`}
    })
    const got = await roundTrip(srv.port, 120, headersOf, true)
    assert.deepEqual(got.map((d) => d.body.toString()), Array.from({length: 120}, (_, i) => `m${i}`))
    assert.deepEqual(got.map((d) => d.headers), expected)
  } finally {
    await srv.stop()
  }
})

test('older peers: a client against a broker that does not announce batch_headers sends PUBLISH per message; a client without batch_headers=1 gets DELIVER frames with h.*', async () => {
  const srv = await startPlainServer({permissionsFor: allowAll})
  const relay = await frameCounter(srv.port, ['batch_headers'])
  try {
    const got = await roundTrip(relay.port, 50, () => HEADERS, true)
    assert.equal(got.length, 50)
    for (const d of got) assert.deepEqual(d.headers, HEADERS)
    assert.equal(relay.count(relay.up, 'PUBLISH'), 50)
    assert.equal(relay.count(relay.up, 'PUBLISH_BATCH'), 0)

    // an old client by hand: batch=1 only. Messages with headers come as DELIVER, h.* intact
    const {next, s} = await raw(srv.port)
    s.write('HELLO 1 identity=old batch=1\nDECLARE_QUEUE 2 name=oq\n')
    assert.equal((await next()).args.batch_headers, '1', 'the broker announces it')
    await next()
    s.write('PUBLISH 3 exchange= key=oq h.trace=a%20b 2\nhi\nPUBLISH 4 exchange= key=oq h.trace=a%20b 2\nho\n')
    await next()
    await next()
    s.write('CONSUME 5 queue=oq prefetch=10 no_ack=1\n')
    await next('OK')
    const a = await next('DELIVER')
    const b = await next('DELIVER')
    assert.deepEqual([a.body.toString(), frameHeaders(a.args)], ['hi', {trace: 'a b'}])
    assert.deepEqual([b.body.toString(), frameHeaders(b.args)], ['ho', {trace: 'a b'}])
    s.destroy()
  } finally {
    await relay.close()
    await srv.stop()
  }
})

test('a PUBLISH_BATCH with headers is checked whole: a bad header name or bad percent-encoding is refused without closing the connection; good ones reach DELIVERS consumers', async () => {
  const srv = await startPlainServer({permissionsFor: allowAll})
  try {
    const {next, s} = await raw(srv.port)
    s.write('HELLO 1 identity=hand batch=1 batch_headers=1\nDECLARE_QUEUE 2 name=hb\n')
    await next()
    await next()
    const body = batchBody(['one', 'two'])
    const frame = (id: number, args: string) => Buffer.concat([Buffer.from(`PUBLISH_BATCH ${id} exchange= key=hb${args} count=2 ${body.length}\n`), body, Buffer.from('\n')])
    s.write(frame(3, ' h.bad/name=x'))
    const badName = await next()
    assert.deepEqual([badName.verb, badName.id, badName.args.code], ['ERR', 3, 'E_BAD_HEADER'])
    s.write(frame(4, ' h.t=%zz'))
    const badEnc = await next()
    assert.deepEqual([badEnc.verb, badEnc.id, badEnc.args.code], ['ERR', 4, 'E_FRAME_MALFORMED'])
    assert.equal(srv.engine.queues.get('hb')!.ready.length, 0, 'nothing of a refused batch was queued')
    s.write(frame(5, ' h.t=a%25b%20c h.x-mq-format=plain'))
    assert.equal((await next()).args.count, '2')
    s.write('CONSUME 6 queue=hb prefetch=10 no_ack=1\n')
    await next('OK')
    const dl = await next('DELIVERS')
    assert.deepEqual(frameHeaders(dl.args), {t: 'a%b c', 'x-mq-format': 'plain'})
    const bodies: string[] = []
    parseDeliveries(dl.body, Number(dl.args.count), (r) => bodies.push(r.body.toString()))
    assert.deepEqual(bodies, ['one', 'two'])
    s.destroy()
  } finally {
    await srv.stop()
  }
})

test('without batch confirms, named publishes share a batch whose one answer settles each: OK with its own id, or ERR for all; an empty id is still refused', async () => {
  const srv = await startPlainServer({permissionsFor: allowAll})
  const c = await BrokerClient.connect({host: '127.0.0.1', plain: true, port: srv.port, tls: {}})
  try {
    await c.declareQueue('nq')
    const ok = await Promise.all(Array.from({length: 5}, (_, i) => c.publish('', 'nq', Buffer.from(`n${i}`), {headers: HEADERS, messageId: `named-${i}`})))
    assert.deepEqual(ok, Array.from({length: 5}, (_, i) => ({messageId: `named-${i}`, queues: ['nq']})))
    const lost = await Promise.allSettled(Array.from({length: 5}, (_, i) => c.publish('', 'no-such-queue', Buffer.from(`x${i}`), {headers: HEADERS, messageId: `lost-${i}`})))
    assert.ok(lost.every((r) => r.status === 'rejected' && (r.reason as {code: string}).code === 'E_UNROUTABLE'))
    await assert.rejects(c.publish('', 'nq', Buffer.from('e'), {messageId: ''}), (e: {code: string}) => e.code === 'E_BAD_MESSAGE_ID')
    const {messages} = await c.peek('nq', 10)
    assert.deepEqual(messages.map((m) => [m.messageId, m.headers]), Array.from({length: 5}, (_, i) => [`named-${i}`, HEADERS]))
  } finally {
    await c.close()
    await srv.stop()
  }
})

/** A writer and a function that cuts full batches of patterned 300-byte records from it, as the broker closes them. */
function fullBatches(): {d: DeliveryBatchWriter; batch: () => Buffer} {
  const d = new DeliveryBatchWriter()
  const body = Buffer.alloc(300)
  let seq = 0
  const batch = (): Buffer => {
    d.start('c1')
    while (d.bytes < BATCH_BYTES) {
      body.fill(seq & 0xff)
      body.writeUInt32BE(seq, 0)
      assert.ok(d.add(++seq, false, 1, 1_795_000_000_000, '', 'k', `m${seq}`, body))
    }
    return d.frame()
  }
  return {batch, d}
}

test('a delivery slab is written again only once every frame cut from it was given back, and then it is: memory stays bounded', () => {
  const {d, batch} = fullBatches()
  // frames still out (in a socket): later batches never touch their bytes, however many there are
  const held: {frame: Buffer; copy: Buffer; written: () => void}[] = []
  for (let i = 0; i < 40; i++) {
    const frame = batch()
    held.push({copy: Buffer.from(frame), frame, written: d.written()})
  }
  // the slabs filled up with frames out (the last one may still take batches after its frame)
  const heldSlabs = new Set(held.slice(0, -1).map((h) => h.frame.buffer))
  heldSlabs.delete(held.at(-1)!.frame.buffer)
  for (let i = 0; i < 200; i++) {
    const frame = batch()
    assert.ok(!heldSlabs.has(frame.buffer), 'a batch was cut from a used-up slab whose frames are still out')
    d.written()()
  }
  for (const h of held) assert.ok(h.frame.equals(h.copy), 'a frame changed while it was out')
  // given back (a callback run twice counts once): their slabs are used again, and no new ones
  for (const h of held) {
    h.written()
    h.written()
  }
  // a socket keeping up: the 4 latest frames out, older ones written in order
  const slabs = new Set<ArrayBufferLike>()
  const out: (() => void)[] = []
  for (let i = 0; i < 1000; i++) {
    slabs.add(batch().buffer)
    out.push(d.written())
    if (out.length > 4) out.shift()!()
  }
  // each slab holds 3 full batches: 4 frames out span 2-3 of them
  assert.ok(slabs.size <= 4, `1000 batches used ${slabs.size} slabs`)
})

test('a drained connection keeps one spare delivery slab, not its backlog peak, and its next batches are intact', () => {
  const {d, batch} = fullBatches()
  // a backlog: 20 frames out at once (7 slabs), then all written
  const out: (() => void)[] = []
  for (let i = 0; i < 20; i++) {
    batch()
    out.push(d.written())
  }
  for (const w of out) w()
  assert.ok(d.spareSlabs >= 4, `spares after a backlog: ${d.spareSlabs}`)
  d.trimSpares(1)
  assert.equal(d.spareSlabs, 1)
  // the trimmed writer goes on: frames out are never overwritten
  const held: {frame: Buffer; copy: Buffer}[] = []
  for (let i = 0; i < 12; i++) {
    const frame = batch()
    held.push({copy: Buffer.from(frame), frame})
  }
  for (const h of held) assert.ok(h.frame.equals(h.copy), 'a frame changed while it was out')
})
