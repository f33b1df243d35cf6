import assert from 'node:assert/strict'
import {appendFileSync, closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'

import {EMPTIED_KEEP_BYTES, SEGMENT_MAX_BYTES, segmentFile} from '../../../src/lib/broker/body-segments.js'
import {Engine} from '../../../src/lib/broker/engine.js'
import {DurableStore} from '../../../src/lib/broker/store.js'
import {peekQueue} from '../../helpers/engine.js'
import {tempHome} from '../../helpers/home.js'

const MARKER = 'PLAINTEXT-MARKER-segment-4e1d'

/** a body of n bytes with the marker at the start and a pattern after it (so bytes compare meaningfully) */
function bodyOf(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * seed + 5) & 0xff
  b.write(MARKER)
  b.write(MARKER, n - MARKER.length)
  return b
}

function segFiles(dir: string): string[] {
  const d = join(dir, 'bodies')
  return existsSync(d) ? readdirSync(d).filter((n) => n.endsWith('.seg')) : []
}

async function withHome(fn: (dir: string, open: (opts?: {windowMessages?: number}) => {store: DurableStore; e: Engine}) => Promise<void>): Promise<void> {
  const h = tempHome()
  const stores: DurableStore[] = []
  try {
    const dir = join(h.dir, 'data')
    await fn(dir, (opts = {}) => {
      const store = new DurableStore(dir, 0, {keyFile: join(h.dir, 'secrets', 'broker.key')})
      stores.push(store)
      return {e: new Engine({store, ...opts}), store}
    })
  } finally {
    for (const s of stores) await s.close().catch(() => {})
    h.cleanup()
  }
}

test('big durable bodies go to a 0600 body segment (ciphertext only), rows point at it, bodies come back byte for byte after a restart, and acking them all removes the file', async () => {
  await withHome(async (dir, open) => {
    const {e, store} = open()
    e.declareQueue('big', {durable: true})
    const bodies = [bodyOf(64 * 1024, 3), bodyOf(1024 * 1024 + 3, 7), bodyOf(200 * 1024, 11)]
    bodies.forEach((b, i) => e.publish('', 'big', b, {headers: {n: String(i)}, messageId: `b-${i}`}))
    e.publish('', 'big', Buffer.from('small one'), {messageId: 's-0'})
    await store.flush()
    const rows = store.db.prepare('SELECT message_id AS id, length(body) AS n, seg, seg_off AS off, size FROM messages ORDER BY seq').all() as {id: string; n: number; seg: number | null; off: number | null; size: number}[]
    assert.deepEqual(
      rows.map((r) => [r.id, r.n, r.seg !== null]),
      [
        ['b-0', 0, true],
        ['b-1', 0, true],
        ['b-2', 0, true],
        ['s-0', 0, false],
      ],
    )
    const files = segFiles(dir)
    assert.equal(files.length, 1)
    const segPath = join(dir, 'bodies', files[0])
    assert.equal(statSync(segPath).mode & 0o777, 0o600, 'a segment is 0600')
    assert.equal(statSync(join(dir, 'bodies')).mode & 0o777, 0o700, 'bodies/ is 0700')
    const seg = readFileSync(segPath)
    assert.equal(seg.length, bodies.reduce((n, b) => n + b.length, 0), 'the segment holds the three ciphertexts and nothing else')
    assert.equal(seg.indexOf(MARKER), -1, 'no plaintext in the segment')
    assert.deepEqual(
      rows.slice(0, 3).map((r) => [r.off, r.size]),
      [
        [0, bodies[0].length],
        [bodies[0].length, bodies[1].length],
        [bodies[0].length + bodies[1].length, bodies[2].length],
      ],
    )
    await store.close()

    // a clean restart: everything back, in order, byte for byte
    const b = open()
    const q = peekQueue(b.e, 'big')
    assert.deepEqual(
      q.map((m) => m.messageId),
      ['b-0', 'b-1', 'b-2', 's-0'],
    )
    q.slice(0, 3).forEach((m, i) => {
      assert.ok(m.body.equals(bodies[i]), `body ${i}`)
      assert.deepEqual(m.headers, {n: String(i)})
    })
    assert.deepEqual(b.store.unreadable, [])
    // ack two: the segment stays for the third
    const s = b.e.openSession('c', {deliver: () => {}, writable: () => true})
    for (let i = 0; i < 2; i++) b.e.ack(s, b.e.get(s, 'big')!.deliveryTag)
    await b.store.flush()
    assert.ok(existsSync(segPath), 'a segment with a live row stays')
    // the last big one acked: the bytes go with its last row (a segment not appended to any more: the file)
    b.e.ack(s, b.e.get(s, 'big')!.deliveryTag)
    await b.store.flush()
    assert.equal(existsSync(segPath), false, 'a segment without live rows is removed')
    assert.deepEqual(b.store.db.prepare('SELECT id FROM body_segments').all(), [])
    await b.store.close()
    assert.deepEqual(segFiles(dir), [])
  })
})

test('a segment held open across a snapshot of broker.db (what mq backup does) still has the bytes that snapshot points at after their row is acked and another big body is published', async () => {
  await withHome(async (dir, open) => {
    const {e, store} = open()
    e.declareQueue('a', {durable: true})
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    e.publish('', 'a', bodyOf(100 * 1024, 3), {messageId: 'a-0'})
    await store.flush()
    const [name] = segFiles(dir)
    const held = openSync(join(dir, 'bodies', name), 'r')
    try {
      // the snapshot: the row of a-0 and its segment's committed end
      const row = store.db.prepare("SELECT seg, seg_off AS off, size FROM messages WHERE message_id = 'a-0'").get() as {seg: number; off: number; size: number}
      const {end} = store.db.prepare('SELECT end FROM body_segments WHERE id = ?').get(row.seg) as {end: number}
      const before = readFileSync(join(dir, 'bodies', name)).subarray(0, end)
      e.ack(s, e.get(s, 'a')!.deliveryTag)
      await store.flush()
      e.publish('', 'a', bodyOf(120 * 1024, 5), {messageId: 'a-1'})
      await store.flush()
      const copy = Buffer.alloc(end)
      assert.equal(readSync(held, copy, 0, end, 0), end, 'the held segment still holds the snapshot\'s committed end')
      assert.ok(copy.equals(before), "the bytes a-0's committed row pointed at were rewritten (a backup would copy a-1's ciphertext as a-0's body)")
      assert.equal(peekQueue(e, 'a')[0].body.equals(bodyOf(120 * 1024, 5)), true)
    } finally {
      closeSync(held)
    }
  })
})

test('the segment being appended to is kept once all its rows are acked and appended to further, goes at a clean stop, and goes at once when emptied at EMPTIED_KEEP_BYTES or more; purge and queue delete free theirs', async () => {
  await withHome(async (dir, open) => {
    const {e, store} = open()
    e.declareQueue('a', {durable: true})
    e.declareQueue('p', {durable: true})
    e.declareQueue('d', {durable: true})
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    e.publish('', 'a', bodyOf(100 * 1024, 3), {messageId: 'a-0'})
    await store.flush()
    assert.equal(segFiles(dir).length, 1)
    const [active] = segFiles(dir)
    e.ack(s, e.get(s, 'a')!.deliveryTag)
    await store.flush()
    assert.equal(statSync(join(dir, 'bodies', active)).size, 100 * 1024, 'the active segment keeps its bytes after its last row went')
    assert.deepEqual(store.db.prepare('SELECT id FROM body_segments').all(), [])
    e.publish('', 'a', bodyOf(100 * 1024, 5), {messageId: 'a-1'})
    await store.flush()
    assert.deepEqual(segFiles(dir), [active], 'and is appended to for the next big body')
    assert.equal(statSync(join(dir, 'bodies', active)).size, 200 * 1024)
    assert.deepEqual(store.db.prepare('SELECT seg_off AS off FROM messages').all(), [{off: 100 * 1024}])
    assert.equal(peekQueue(e, 'a')[0].body.equals(bodyOf(100 * 1024, 5)), true)
    e.ack(s, e.get(s, 'a')!.deliveryTag)
    for (let i = 0; i < 3; i++) e.publish('', 'p', bodyOf(80 * 1024, i + 1), {messageId: `p-${i}`})
    for (let i = 0; i < 3; i++) e.publish('', 'd', bodyOf(80 * 1024, i + 2), {messageId: `d-${i}`})
    await store.flush()
    assert.equal(segFiles(dir).length, 1)
    e.purgeQueue('p')
    await store.flush()
    assert.equal(segFiles(dir).length, 1, "queue d's rows keep the segment")
    e.deleteQueue('d')
    await store.flush()
    assert.deepEqual(store.db.prepare('SELECT id FROM body_segments').all(), [], 'purge and delete released every row')
    assert.deepEqual(store.db.prepare('SELECT COUNT(*) AS n FROM messages').get(), {n: 0})
    // emptied at EMPTIED_KEEP_BYTES or more: it goes, and the next big body starts the next segment
    const mib = 1024 * 1024
    const n = Math.ceil(EMPTIED_KEEP_BYTES / mib)
    for (let i = 0; i < n; i++) e.publish('', 'a', bodyOf(mib, i + 1), {messageId: `m-${i}`})
    await store.flush()
    assert.deepEqual(segFiles(dir), [active])
    for (let i = 0; i < n; i++) e.ack(s, e.get(s, 'a')!.deliveryTag)
    await store.flush()
    assert.deepEqual(segFiles(dir), [], 'an emptied segment of EMPTIED_KEEP_BYTES or more goes while running')
    e.publish('', 'a', bodyOf(100 * 1024, 9), {messageId: 'a-2'})
    await store.flush()
    const next = segFiles(dir)
    assert.equal(next.length, 1)
    assert.ok(next[0] > active, 'a new segment id, never the removed one')
    assert.equal(peekQueue(e, 'a')[0].body.equals(bodyOf(100 * 1024, 9)), true)
    e.ack(s, e.get(s, 'a')!.deliveryTag)
    await store.flush()
    await store.close()
    assert.deepEqual(segFiles(dir), [], 'an empty segment goes at a clean stop')
  })
})

test('a segment id is never made twice: after its file went at a clean stop, or at open after a crash, the next big body goes to a higher id (a backup holding the old file open by that name cannot copy it as the new one)', async () => {
  await withHome(async (dir, open) => {
    const idOf = (f: string) => Number(f.slice(0, -4))
    const a = open()
    a.e.declareQueue('a', {durable: true})
    const s = a.e.openSession('c', {deliver: () => {}, writable: () => true})
    a.e.publish('', 'a', bodyOf(100 * 1024, 3), {messageId: 'a-0'})
    await a.store.flush()
    const [first] = segFiles(dir)
    a.e.ack(s, a.e.get(s, 'a')!.deliveryTag)
    await a.store.flush()
    await a.store.close()
    assert.deepEqual(segFiles(dir), [], 'the emptied segment went at the clean stop')
    const b = open()
    b.e.publish('', 'a', bodyOf(100 * 1024, 5), {messageId: 'a-1'})
    await b.store.flush()
    const [second] = segFiles(dir)
    assert.ok(idOf(second) > idOf(first), `after a clean stop: ${second} follows ${first}`)
    await b.store.close()
    // a file never committed (a crash between its creation and the commit): removed at open, its id still made
    const orphan = segmentFile(join(dir, 'bodies'), idOf(second) + 1)
    writeFileSync(orphan, Buffer.alloc(100))
    const c = open()
    assert.equal(existsSync(orphan), false)
    await c.store.close()
    const d = open()
    const e2 = d.e.openSession('c2', {deliver: () => {}, writable: () => true})
    d.e.ack(e2, d.e.get(e2, 'a')!.deliveryTag)
    d.e.publish('', 'a', bodyOf(100 * 1024, 7), {messageId: 'a-2'})
    await d.store.flush()
    const files = segFiles(dir)
    assert.equal(files.length, 1)
    assert.ok(idOf(files[0]) > idOf(second) + 1, `after the orphan ${idOf(second) + 1} was removed: ${files[0]}`)
    assert.equal(peekQueue(d.e, 'a')[0].body.equals(bodyOf(100 * 1024, 7)), true)
  })
})

test('a segment is rolled at SEGMENT_MAX_BYTES; the rolled one is removed while the broker runs once its rows are acked', async () => {
  await withHome(async (dir, open) => {
    const {e, store} = open()
    e.declareQueue('r', {durable: true})
    const n = Math.ceil(SEGMENT_MAX_BYTES / (1024 * 1024)) + 2
    for (let i = 0; i < n; i++) {
      e.publish('', 'r', bodyOf(1024 * 1024, i + 1), {messageId: `r-${i}`})
      if (i % 8 === 7) await store.flush()
    }
    await store.flush()
    const files = segFiles(dir).sort()
    assert.equal(files.length, 2, 'rolled once')
    assert.ok(statSync(join(dir, 'bodies', files[0])).size <= SEGMENT_MAX_BYTES)
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    const segOf = (id: string) => (store.db.prepare('SELECT seg FROM messages WHERE message_id = ?').get(id) as {seg: number}).seg
    const firstInSecond = Array.from({length: n}, (_, i) => `r-${i}`).findIndex((id) => segOf(id) !== segOf('r-0'))
    assert.ok(firstInSecond > 0)
    for (let i = 0; i < firstInSecond; i++) {
      const d = e.get(s, 'r')!
      assert.ok(d.msg.body.equals(bodyOf(1024 * 1024, i + 1)))
      e.ack(s, d.deliveryTag)
    }
    await store.flush()
    assert.deepEqual(segFiles(dir), [files[1]], 'the first segment went with its last row')
  })
})

test('a big backlog beyond the window is paged back from its segment in order after a restart', async () => {
  await withHome(async (dir, open) => {
    const {e, store} = open({windowMessages: 4})
    e.declareQueue('w', {durable: true})
    const bodies = Array.from({length: 20}, (_, i) => bodyOf(70 * 1024 + i, i + 1))
    bodies.forEach((b, i) => e.publish('', 'w', b, {messageId: `w-${i}`}))
    await store.close()
    const b = open({windowMessages: 4})
    const s = b.e.openSession('c', {deliver: () => {}, writable: () => true})
    const got: string[] = []
    for (let d = b.e.get(s, 'w'); d; d = b.e.get(s, 'w')) {
      assert.ok(d.msg.body.equals(bodies[got.length]), `body ${got.length}`)
      got.push(d.msg.messageId)
      b.e.ack(s, d.deliveryTag)
      // let the writer commit the acks (and the engine page the next window in)
      if (got.length % 4 === 0) await b.store.flush()
    }
    assert.equal(got.length, 20)
    await b.store.close()
    assert.deepEqual(segFiles(dir), [])
  })
})

test('at open: a torn tail after the last committed body is truncated, a segment no row points at is removed, and every committed body still reads', async () => {
  await withHome(async (dir, open) => {
    const {e, store} = open()
    e.declareQueue('t', {durable: true})
    const bodies = [bodyOf(90 * 1024, 3), bodyOf(300 * 1024, 9)]
    bodies.forEach((b, i) => e.publish('', 't', b, {messageId: `t-${i}`}))
    await store.close()
    const [name] = segFiles(dir)
    const segPath = join(dir, 'bodies', name)
    const committed = statSync(segPath).size
    // what a crash mid-append leaves: bytes after the committed end (of a commit that never happened)
    appendFileSync(segPath, Buffer.alloc(12345, 0xab))
    // and a segment created by a commit that never happened
    const orphan = segmentFile(join(dir, 'bodies'), 999)
    writeFileSync(orphan, Buffer.alloc(5000, 1), {mode: 0o600})
    const b = open()
    assert.equal(statSync(segPath).size, committed, 'the torn tail was cut off')
    assert.equal(existsSync(orphan), false, 'the orphan segment was removed')
    const q = peekQueue(b.e, 't')
    assert.deepEqual(
      q.map((m) => m.messageId),
      ['t-0', 't-1'],
    )
    q.forEach((m, i) => assert.ok(m.body.equals(bodies[i]), `body ${i}`))
    // new big bodies go to a segment above the highest id seen, never appended to an old one
    b.e.publish('', 't', bodyOf(70 * 1024, 4), {messageId: 't-2'})
    await b.store.flush()
    const r = b.store.db.prepare("SELECT seg FROM messages WHERE message_id = 't-2'").get() as {seg: number}
    assert.ok(r.seg > 999)
    assert.equal(statSync(segPath).size, committed)
  })
})

test('a body whose segment bytes were altered or are missing is reported unreadable, not delivered', async () => {
  await withHome(async (dir, open) => {
    const {e, store} = open()
    e.declareQueue('x', {durable: true})
    e.publish('', 'x', bodyOf(80 * 1024, 3), {messageId: 'x-0'})
    e.publish('', 'x', bodyOf(80 * 1024, 5), {messageId: 'x-1'})
    await store.close()
    const [name] = segFiles(dir)
    const segPath = join(dir, 'bodies', name)
    const bytes = readFileSync(segPath)
    bytes[80 * 1024 + 10] ^= 1
    writeFileSync(segPath, bytes)
    const b = open()
    assert.deepEqual(
      peekQueue(b.e, 'x').map((m) => m.messageId),
      ['x-0'],
    )
    assert.deepEqual(
      b.store.unreadable.map((u) => [u.messageId, /authentication failed/.test(u.reason)]),
      [['x-1', true]],
    )
    await b.store.close()
    // the segment file gone altogether (a restore without data/bodies): both reported, neither delivered
    rmSync(segPath)
    const c = open()
    assert.deepEqual(peekQueue(c.e, 'x'), [])
    assert.deepEqual(
      c.store.unreadable.map((u) => [u.messageId, /segment \d+ cannot be read/.test(u.reason)]),
      [
        ['x-0', true],
        ['x-1', true],
      ],
    )
  })
})
