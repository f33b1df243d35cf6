import assert from 'node:assert/strict'
import {appendFileSync, closeSync, cpSync, existsSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'

import {EMPTIED_KEEP_BYTES, GROUP_SEGMENT_MAX_BYTES, SEGMENT_MAX_BYTES, segmentFile} from '../../../src/lib/broker/body-segments.js'
import {Engine} from '../../../src/lib/broker/engine.js'
import {DurableStore, GROUP_SEGMENT_COMMIT_MIN, GROUP_SEGMENT_MIN} from '../../../src/lib/broker/store.js'
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

test('a commit that packs less than GROUP_SEGMENT_COMMIT_MIN keeps its groups in broker.db, big ones too (one sync per commit, no segment); they come back after a restart and go once acked', async () => {
  await withHome(async (dir, open) => {
    const {e, store} = open()
    e.declareQueue('s', {durable: true})
    // ~120 KiB of records: one group of GROUP_SEGMENT_MIN or more and the rest
    const n = 120
    for (let i = 0; i < n; i++) e.publish('', 's', bodyOf(1000, i + 3), {messageId: `s-${i}`})
    await store.flush()
    const groups = store.db.prepare('SELECT length(data) AS n, seg FROM sealed_groups').all() as {n: number; seg: number | null}[]
    assert.ok(groups.some((g) => g.n >= GROUP_SEGMENT_MIN), 'a group of GROUP_SEGMENT_MIN or more')
    assert.ok(n * 1000 < GROUP_SEGMENT_COMMIT_MIN)
    assert.deepEqual(groups.filter((g) => g.seg !== null), [], 'no group in a segment')
    assert.deepEqual(segFiles(dir), [])
    for (const f of [join(dir, 'broker.db'), join(dir, 'broker.db-wal')]) if (existsSync(f)) assert.equal(readFileSync(f).indexOf(MARKER), -1, `no plaintext in ${f}`)
    await store.close()
    const b = open()
    const got = peekQueue(b.e, 's')
    assert.equal(got.length, n)
    got.forEach((m, i) => assert.ok(m.body.equals(bodyOf(1000, i + 3)) && m.messageId === `s-${i}`))
    const s = b.e.openSession('c', {deliver: () => {}, writable: () => true})
    for (let i = 0; i < n; i++) b.e.ack(s, b.e.get(s, 's')!.deliveryTag)
    await b.store.flush()
    assert.equal((b.store.db.prepare('SELECT COUNT(*) AS c FROM sealed_groups').get() as {c: number}).c, 0)
    assert.equal(b.store.queueIndex().get('s'), undefined)
  })
})

test('a commit of many small messages seals them in groups that go to a body segment (ciphertext only, no blob in broker.db); they come back byte for byte from a crash copy and after a restart, acking them all frees the segment, and an altered group is unreadable', async () => {
  await withHome(async (dir, open) => {
    const {e, store} = open()
    e.declareQueue('g', {durable: true})
    const n = 300
    for (let i = 0; i < n; i++) e.publish('', 'g', bodyOf(1000 + (i % 7), i + 3), {headers: {n: String(i)}, messageId: `g-${i}`})
    await store.flush()
    const groups = store.db.prepare('SELECT id, length(data) AS n, seg, seg_off AS off, seg_len AS len, live FROM sealed_groups ORDER BY id').all() as {id: number; n: number; seg: number | null; off: number | null; len: number | null; live: number}[]
    const inSeg = groups.filter((g) => g.seg !== null)
    assert.ok(inSeg.length >= 3, `${inSeg.length} of ${groups.length} groups in a segment`)
    for (const g of inSeg) {
      assert.equal(g.n, 0, 'a group in a segment keeps no blob in broker.db')
      assert.ok(g.len! >= GROUP_SEGMENT_MIN)
    }
    assert.ok(inSeg.reduce((k, g) => k + g.live, 0) >= n - 60, 'most messages are in segment groups')
    for (const g of groups.filter((x) => x.seg === null)) assert.ok(g.n > 0 && g.n < GROUP_SEGMENT_MIN, 'a small group stays in broker.db')
    const files = segFiles(dir)
    assert.equal(files.length, 1)
    const segPath = join(dir, 'bodies', files[0])
    assert.equal(statSync(segPath).mode & 0o777, 0o600)
    assert.equal(readFileSync(segPath).length, inSeg.reduce((k, g) => k + g.len!, 0))
    for (const f of [segPath, join(dir, 'broker.db'), join(dir, 'broker.db-wal')]) if (existsSync(f)) assert.equal(readFileSync(f).indexOf(MARKER), -1, `no plaintext in ${f}`)

    // what a kill -9 right after the commit leaves (the store still open): everything comes back from it
    const crash = `${dir}-crash`
    cpSync(dir, crash, {recursive: true})
    const keyFile = join(dir, '..', 'secrets', 'broker.key')
    const check = (st: DurableStore, eng: Engine, expectAll: boolean) => {
      const got = peekQueue(eng, 'g')
      if (expectAll) assert.equal(got.length, n)
      for (const m of got) {
        const i = Number(m.messageId.slice(2))
        assert.ok(m.body.equals(bodyOf(1000 + (i % 7), i + 3)), `body of ${m.messageId}`)
        assert.equal(m.headers.n, String(i))
      }
      if (expectAll) assert.deepEqual(st.unreadable, [])
      return got
    }
    const c = new DurableStore(crash, 0, {keyFile})
    try {
      check(c, new Engine({store: c}), true)
    } finally {
      await c.close()
    }

    // a clean restart: the same; then all acked: groups and the segment's count go
    await store.close()
    const b = open()
    check(b.store, b.e, true)
    const s = b.e.openSession('s', {deliver: () => {}, writable: () => true})
    for (let i = 0; i < n; i++) b.e.ack(s, b.e.get(s, 'g')!.deliveryTag)
    await b.store.flush()
    assert.equal((b.store.db.prepare('SELECT COUNT(*) AS k FROM sealed_groups').get() as {k: number}).k, 0)
    assert.equal((b.store.db.prepare('SELECT COUNT(*) AS k FROM body_segments WHERE live > 0').get() as {k: number}).k, 0)
    await b.store.close()
    assert.deepEqual(segFiles(dir), [], 'the emptied segment goes at a clean stop')

    // one group's ciphertext altered in the crash copy: its messages are skipped as unreadable, the others delivered
    const [name] = segFiles(crash)
    const cseg = join(crash, 'bodies', name)
    const bytes = readFileSync(cseg)
    bytes[inSeg[1].off! + 100] ^= 1
    writeFileSync(cseg, bytes)
    const d = new DurableStore(crash, 0, {keyFile})
    try {
      const got = check(d, new Engine({store: d}), false)
      assert.equal(got.length, n - inSeg[1].live)
      assert.equal(d.unreadable.length, inSeg[1].live)
      assert.ok(d.unreadable.every((u) => /authentication of its sealed group/.test(u.reason)))
    } finally {
      await d.close()
      rmSync(crash, {force: true, recursive: true})
    }
  })
})

test('sealed groups go to segments of their own, rolled at GROUP_SEGMENT_MAX_BYTES: a message left in a slow queue keeps only its group segment, the busy queue\'s others go once acked', async () => {
  await withHome(async (dir, open) => {
    const {e, store} = open()
    e.declareQueue('slow', {durable: true})
    e.declareQueue('fast', {durable: true})
    e.publish('', 'slow', bodyOf(1000, 1), {messageId: 'slow-0'})
    const n = Math.ceil((2.5 * GROUP_SEGMENT_MAX_BYTES) / 1000)
    for (let i = 0; i < n; i++) e.publish('', 'fast', bodyOf(1000, i + 2), {messageId: `f-${i}`})
    e.publish('', 'fast', bodyOf(100 * 1024, 9), {messageId: 'big'})
    await store.flush()
    const segOf = (id: string) => (store.db.prepare('SELECT seg FROM messages WHERE message_id = ?').get(id) as {seg: number}).seg
    const groupSegs = (store.db.prepare('SELECT DISTINCT seg FROM sealed_groups WHERE seg IS NOT NULL').all() as {seg: number}[]).map((r) => r.seg)
    assert.equal(groupSegs.length, 3, 'groups of 2.5 x GROUP_SEGMENT_MAX_BYTES in three segments')
    const bigSeg = segOf('big')
    assert.ok(!groupSegs.includes(bigSeg), 'a big body is not in a group segment')
    for (const f of segFiles(dir)) assert.ok(statSync(join(dir, 'bodies', f)).size <= Math.max(GROUP_SEGMENT_MAX_BYTES, 100 * 1024 + 16))
    const s = e.openSession('s', {deliver: () => {}, writable: () => true})
    for (let i = 0; i < n + 1; i++) e.ack(s, e.get(s, 'fast')!.deliveryTag)
    await store.flush()
    // left: the slow message's group segment, and the two being appended to (big bodies', groups'), kept for more
    // appends (EMPTIED_KEEP_BYTES); the rolled group segment in the middle went once its groups did
    const sorted = [...groupSegs].sort((x, y) => x - y)
    const left = segFiles(dir).map((f) => Number(f.slice(0, 6)))
    assert.deepEqual(left.sort((x, y) => x - y), [sorted[0], bigSeg, sorted[2]].sort((x, y) => x - y))
    await store.close()
    const b = open()
    assert.deepEqual(
      peekQueue(b.e, 'slow').map((m) => [m.messageId, m.body.equals(bodyOf(1000, 1))]),
      [['slow-0', true]],
    )
    assert.deepEqual(peekQueue(b.e, 'fast'), [])
  })
})
