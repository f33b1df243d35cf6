import assert from 'node:assert/strict'
import {chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'

import Database from 'better-sqlite3'

import {segmentFile} from '../../../src/lib/broker/body-segments.js'
import {Engine} from '../../../src/lib/broker/engine.js'
import {DurableStore, STORE_PAGE_BYTES, openGroup, readInsertRecord, storeKeyId} from '../../../src/lib/broker/store.js'
import type {MqError} from '../../../src/lib/errors.js'
import {peekQueue} from '../../helpers/engine.js'
import {tempHome} from '../../helpers/home.js'

/**
 * Runs fn with a fresh home; openStore() opens its broker store (as a restarted broker would), and every
 * store opened is closed afterwards: a failed assertion must not leave a writer thread behind to hang the file.
 */
async function withStores(fn: (openStore: () => DurableStore) => Promise<void>): Promise<void> {
  const h = tempHome()
  const open: DurableStore[] = []
  try {
    await fn(() => {
      const st = new DurableStore(join(h.dir, 'data'), 0, {keyFile: join(h.dir, 'secrets', 'broker.key')})
      open.push(st)
      return st
    })
  } finally {
    for (const st of open) await st.close().catch(() => {})
    h.cleanup()
  }
}

test('durable queues, bindings and messages (headers, binary, unicode, delivery counts) survive a reopen; acked ones do not', async () => {
  const h = tempHome()
  try {
    const store = new DurableStore(join(h.dir, 'data'), 0, {keyFile: join(h.dir, 'secrets', 'broker.key')})
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

    const store2 = new DurableStore(join(h.dir, 'data'), 0, {keyFile: join(h.dir, 'secrets', 'broker.key')})
    const e2 = new Engine({store: store2})
    assert.deepEqual(e2.listQueues().map((q) => q.name), ['default_queue', 'default_queue.dlq', 'q.dlq', 'q.u'])
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

test('a broker.db from before encryption at rest (no key_id column, plaintext rows) still loads and is resealed in place; new rows are sealed', async () => {
  const h = tempHome()
  try {
    const dataDir = join(h.dir, 'data')
    mkdirSync(dataDir, {mode: 0o700})
    const old = new Database(join(dataDir, 'broker.db'))
    old.exec(`CREATE TABLE queues (name TEXT PRIMARY KEY, dead_letter TEXT, ttl_ms INTEGER, max_length INTEGER);
      CREATE TABLE messages (seq INTEGER PRIMARY KEY, queue TEXT NOT NULL, message_id TEXT NOT NULL, exchange TEXT NOT NULL,
      routing_key TEXT NOT NULL, headers TEXT, body BLOB NOT NULL, ts INTEGER NOT NULL, delivery_count INTEGER NOT NULL DEFAULT 0, expires_at INTEGER NOT NULL DEFAULT 0);`)
    old.prepare("INSERT INTO queues (name) VALUES ('q')").run()
    old.prepare("INSERT INTO messages (seq, queue, message_id, exchange, routing_key, headers, body, ts) VALUES (7, 'q', 'legacy-1', '', 'q', ?, ?, 1)").run('{"a":"b"}', Buffer.from('old plaintext'))
    old.close()
    const keyFile = join(h.dir, 'secrets', 'broker.key')
    const store = new DurableStore(dataDir, 0, {keyFile})
    const e = new Engine({store})
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    const got = e.get(s, 'q')!
    assert.equal(store.legacyPlaintext, 1)
    assert.equal(got.msg.messageId, 'legacy-1')
    assert.equal(got.msg.body.toString(), 'old plaintext')
    assert.deepEqual(got.msg.headers, {a: 'b'})
    e.publish('', 'q', Buffer.from('new one'), {messageId: 'new-1'})
    await store.close()
    const db = new Database(join(dataDir, 'broker.db'))
    const row = db.prepare("SELECT headers, body, key_id FROM messages WHERE message_id = 'new-1'").get() as {headers: string | null; body: Buffer; key_id: number}
    db.close()
    assert.equal(row.headers, null)
    assert.equal(row.key_id, storeKeyId(readFileSync(keyFile)))
    assert.ok(!row.body.includes('new one'))
    // the legacy row was resealed in place: its plaintext is gone from the file (without the reseal it stays)
    const db2 = new Database(join(dataDir, 'broker.db'))
    const legacy = db2.prepare("SELECT headers, key_id FROM messages WHERE message_id = 'legacy-1'").get() as {headers: string | null; key_id: number | null}
    db2.close()
    assert.equal(legacy.headers, null)
    assert.equal(legacy.key_id, row.key_id)
    const raw = readFileSync(join(dataDir, 'broker.db'))
    assert.ok(raw.includes('legacy-1'), 'the check sees the row')
    assert.ok(!raw.includes('old plaintext') && !raw.includes('{"a":"b"}'), 'legacy plaintext scrubbed from broker.db')
    // and it still loads
    const store2 = new DurableStore(dataDir, 0, {keyFile})
    const e2 = new Engine({store: store2})
    assert.equal(store2.legacyPlaintext, 0)
    const s2 = e2.openSession('c', {deliver: () => {}, writable: () => true})
    const again = e2.get(s2, 'q')!
    assert.equal(again.msg.messageId, 'legacy-1')
    assert.equal(again.msg.body.toString(), 'old plaintext')
    assert.deepEqual(again.msg.headers, {a: 'b'})
    await store2.close()
  } finally {
    h.cleanup()
  }
})

test('the store key: a looser mode is refused; a missing key is not silently replaced while sealed rows exist; rows under another key are skipped', async () => {
  const h = tempHome()
  try {
    const dataDir = join(h.dir, 'data')
    const keyFile = join(h.dir, 'secrets', 'broker.key')
    const store = new DurableStore(dataDir, 0, {keyFile})
    const e = new Engine({store})
    e.declareQueue('q', {durable: true})
    e.publish('', 'q', Buffer.from('sealed'), {messageId: 'm-1'})
    await store.close()
    assert.equal(statSync(keyFile).mode & 0o777, 0o600)

    chmodSync(keyFile, 0o644)
    assert.throws(() => new DurableStore(dataDir, 0, {keyFile}), (err: MqError) => err.code === 'E_KEY_PERMISSIONS')
    chmodSync(keyFile, 0o600)

    const saved = readFileSync(keyFile)
    rmSync(keyFile)
    assert.throws(() => new DurableStore(dataDir, 0, {keyFile}), (err: MqError) => err.code === 'E_STORE_KEY_MISSING')
    assert.ok(!existsSync(keyFile), 'no new key was minted')

    // another key (e.g. a replaced broker.key): the row is reported and skipped, not delivered, and kept
    writeFileSync(keyFile, Buffer.alloc(32, 7), {mode: 0o600})
    const other = new DurableStore(dataDir, 0, {keyFile})
    const e2 = new Engine({store: other})
    assert.deepEqual(peekQueue(e2, 'q'), [])
    assert.deepEqual(other.unreadable.map((u) => [u.messageId, u.queue]), [['m-1', 'q']])
    assert.match(other.unreadable[0]!.reason, /key id/)
    await other.close()

    // the original key brings it back
    writeFileSync(keyFile, saved, {mode: 0o600})
    const back = new DurableStore(dataDir, 0, {keyFile})
    const e3 = new Engine({store: back})
    const s = e3.openSession('c', {deliver: () => {}, writable: () => true})
    assert.equal(e3.get(s, 'q')!.msg.body.toString(), 'sealed')
    await back.close()
  } finally {
    h.cleanup()
  }
})

test('group commits: many confirms (groups of at most 128, committed together when they queue up) are answered in order, and every message is on disk', async () => {
  const h = tempHome()
  try {
    const store = new DurableStore(join(h.dir, 'data'), 0, {keyFile: join(h.dir, 'secrets', 'broker.key')})
    const e = new Engine({store})
    e.declareQueue('pipe', {durable: true})
    const order: number[] = []
    const all: Promise<void>[] = []
    for (let i = 0; i < 1000; i++) {
      e.publish('', 'pipe', Buffer.from(`m${i}`), {messageId: `p-${i}`})
      all.push(new Promise((resolve, reject) => store.afterCommit((err) => (err ? reject(err) : resolve(void order.push(i))))))
    }
    await Promise.all(all)
    assert.deepEqual(order, [...Array(1000).keys()], 'confirms come back in publish order')
    await store.close()
    const store2 = new DurableStore(join(h.dir, 'data'), 0, {keyFile: join(h.dir, 'secrets', 'broker.key')})
    const e2 = new Engine({store: store2})
    assert.equal(e2.queues.get('pipe')!.messages, 1000)
    assert.deepEqual(peekQueue(e2, 'pipe').map((m) => m.messageId), Array.from({length: 1000}, (_, i) => `p-${i}`))
    await store2.close()
  } finally {
    h.cleanup()
  }
})

/** A store whose writer thread is held up by another connection's write lock until release(). */
function heldStore(dir: string) {
  const store = new DurableStore(join(dir, 'data'), 0, {keyFile: join(dir, 'secrets', 'broker.key')})
  const e = new Engine({store})
  const other = new Database(join(dir, 'data', 'broker.db'))
  return {
    e,
    hold: () => other.exec('BEGIN IMMEDIATE'),
    other,
    release: () => {
      other.exec('COMMIT')
      other.close()
    },
    store,
  }
}
const turn = () => new Promise((r) => setTimeout(r, 30))

test('publishes posted while a commit is held up are committed together, in one transaction, and confirmed in order', async () => {
  const h = tempHome()
  try {
    const {e, hold, release, store} = heldStore(h.dir)
    e.declareQueue('merge', {durable: true})
    await store.flush()
    hold()
    const order: number[] = []
    const confirms: Promise<void>[] = []
    const before = store.commits
    // six publishes in six turns: six groups posted to the writer (none held back here), the first stuck on the lock
    for (let i = 0; i < 6; i++) {
      e.publish('', 'merge', Buffer.from(`m${i}`), {messageId: `m-${i}`})
      confirms.push(new Promise((resolve, reject) => store.afterCommit((err) => (err ? reject(err) : resolve(void order.push(i))))))
      await turn()
    }
    assert.deepEqual(order, [], 'nothing is confirmed while the commit cannot go through')
    release()
    await Promise.all(confirms)
    assert.deepEqual(order, [0, 1, 2, 3, 4, 5])
    // the five groups that queued behind the stuck commit go in one more (one fsync), not five
    assert.ok(store.commits - before <= 2, `6 groups took ${store.commits - before} commits`)
    await store.close()
    const again = new DurableStore(join(h.dir, 'data'), 0, {keyFile: join(h.dir, 'secrets', 'broker.key')})
    assert.deepEqual(peekQueue(new Engine({store: again}), 'merge').map((m) => m.messageId), ['m-0', 'm-1', 'm-2', 'm-3', 'm-4', 'm-5'])
    await again.close()
  } finally {
    h.cleanup()
  }
})

test('messages acked while their inserts wait behind the commit under way are never written: no row, no sealed group, no body pages', async () => {
  const h = tempHome()
  const {e, hold, release, store} = heldStore(h.dir)
  let again: DurableStore | undefined
  try {
    e.declareQueue('stuck', {durable: true})
    e.declareQueue('q', {durable: true})
    await store.flush()
    // bytes this process (the writer and checkpointer threads included) hands to write()
    const written = () => Number(/wchar: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))![1])
    const before = written()
    hold()
    const BIG = 1024 * 1024
    const confirms: Promise<void>[] = []
    const publish = (queue: string, id: string, body: Buffer) => {
      e.publish('', queue, body, {messageId: id})
      confirms.push(new Promise((resolve, reject) => store.afterCommit((err) => (err ? reject(err) : resolve()))))
    }
    // the commit under way (held on the lock), then two groups queued behind it: the first inserts
    // acked-small and acked-big, the second acks both and inserts kept
    publish('stuck', 'stuck', Buffer.from('stuck'))
    await turn()
    publish('q', 'acked-small', Buffer.from('acked small'))
    publish('q', 'acked-big', Buffer.alloc(BIG, 7))
    await turn()
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    for (const id of ['acked-small', 'acked-big']) {
      const d = e.get(s, 'q')!
      assert.equal(d.msg.messageId, id)
      e.ack(s, d.deliveryTag)
    }
    publish('q', 'kept', Buffer.from('kept'))
    await turn()
    release()
    await Promise.all(confirms)
    // two commits of a few 16 KiB pages each (and their checkpoint): writing the big body would be 1 MiB more
    const bytes = written() - before
    assert.ok(bytes < BIG, `${bytes} bytes written for three small messages`)
    const key = readFileSync(join(h.dir, 'secrets', 'broker.key'))
    const row = store.db.prepare("SELECT group_id FROM messages WHERE message_id = 'kept'").get() as {group_id: number}
    const g = store.db.prepare('SELECT data FROM sealed_groups WHERE id = ?').get(row.group_id) as {data: Buffer}
    const plain = openGroup(key, storeKeyId(key), row.group_id, g.data)
    const sealed: string[] = []
    for (let p = 0; p < plain.length; ) {
      const r = readInsertRecord(plain, p)
      sealed.push(r.m.messageId)
      p = r.next
    }
    assert.deepEqual(sealed, ['kept'])
    assert.equal((store.db.prepare('SELECT COUNT(*) AS n FROM sealed_groups').get() as {n: number}).n, 2, "stuck's group and kept's")
    await store.close()
    again = new DurableStore(join(h.dir, 'data'), 0, {keyFile: join(h.dir, 'secrets', 'broker.key')})
    const e2 = new Engine({store: again})
    assert.deepEqual(peekQueue(e2, 'q').map((m) => m.messageId), ['kept'])
    assert.deepEqual(peekQueue(e2, 'stuck').map((m) => m.messageId), ['stuck'])
    assert.deepEqual([...again.queueIndex()].sort(), [['q', {bytes: 4, messages: 1}], ['stuck', {bytes: 5, messages: 1}]])
  } finally {
    // a failed assertion must not leave a writer thread behind to keep the test process alive
    await store.close().catch(() => {})
    await again?.close().catch(() => {})
    h.cleanup()
  }
})

test('a group whose commit fails does not fail the groups committed with it: they are confirmed and on disk, it is refused', async () => {
  const h = tempHome()
  try {
    const {e, hold, other, release, store} = heldStore(h.dir)
    e.declareQueue('mixed', {durable: true})
    await store.flush()
    other.exec("CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.message_id = 'bad' BEGIN SELECT RAISE(ABORT, 'refused by test'); END")
    hold()
    const results: string[] = []
    const confirms: Promise<void>[] = []
    for (const id of ['good-0', 'bad', 'good-2']) {
      e.publish('', 'mixed', Buffer.from(id), {messageId: id})
      confirms.push(new Promise((resolve) => store.afterCommit((err) => resolve(void results.push(err ? `${id}: ${(err as MqError).code}` : `${id}: ok`)))))
      await turn()
    }
    release()
    await Promise.all(confirms)
    assert.deepEqual(results, ['good-0: ok', 'bad: E_STORE_WRITE', 'good-2: ok'])
    await store.close()
    const again = new DurableStore(join(h.dir, 'data'), 0, {keyFile: join(h.dir, 'secrets', 'broker.key')})
    assert.deepEqual(peekQueue(new Engine({store: again}), 'mixed').map((m) => m.messageId), ['good-0', 'good-2'])
    await again.close()
  } finally {
    h.cleanup()
  }
})

test('sealed groups: one commit seals its small messages together; a group goes with its last message; big bodies are sealed per row; altered rows are refused', async () => {
  const h = tempHome()
  const dir = join(h.dir, 'data')
  const keyFile = join(h.dir, 'secrets', 'broker.key')
  try {
    const store = new DurableStore(dir, 0, {keyFile})
    const e = new Engine({store})
    e.declareQueue('g', {durable: true})
    e.declareQueue('gone', {durable: true})
    for (let i = 0; i < 5; i++) e.publish('', 'g', Buffer.from(`small ${i}`), {headers: {n: String(i)}, messageId: `s-${i}`})
    const big = Buffer.alloc(100 * 1024, 7)
    e.publish('', 'g', big, {messageId: 'big-1'})
    e.publish('', 'gone', Buffer.from('dropped with its queue'), {messageId: 'q-1'})
    await store.flush()
    const rows = () => store.db.prepare('SELECT message_id AS id, group_id AS g, length(body) AS n, length(headers) AS hn, seg, size FROM messages ORDER BY seq').all() as {id: string; g: number | null; n: number; hn: number | null; seg: number | null; size: number}[]
    const groups = () => (store.db.prepare('SELECT COUNT(*) AS n FROM sealed_groups').get() as {n: number}).n
    const r1 = rows()
    const small = r1.filter((r) => r.id.startsWith('s-'))
    assert.equal(new Set(small.map((r) => r.g)).size, 1, 'the five small messages of one commit share one group')
    assert.ok(small.every((r) => r.g !== null && r.n === 0))
    const bigRow = r1.find((r) => r.id === 'big-1')!
    assert.equal(bigRow.g, null, 'a 100 KiB body is sealed in its own row')
    // sealed split: the body's ciphertext is in a body segment, nonce, sealed headers length and tag in the row
    assert.equal(bigRow.n, 0)
    assert.ok(bigRow.seg !== null)
    assert.equal(bigRow.size, big.length)
    assert.equal(bigRow.hn, 12 + 4 + 16)
    assert.equal(groups(), 1)

    // ack four of the five: the group stays for the fifth; deleting the queue 'gone' takes nothing of 'g'
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    for (let i = 0; i < 4; i++) e.ack(s, e.get(s, 'g')!.deliveryTag)
    e.deleteQueue('gone')
    await store.flush()
    assert.equal(groups(), 1)
    await store.close()

    const store2 = new DurableStore(dir, 0, {keyFile})
    const e2 = new Engine({store: store2})
    const q = peekQueue(e2, 'g')
    assert.deepEqual(q.map((m) => m.messageId), ['s-4', 'big-1'])
    assert.equal(q[0].body.toString(), 'small 4')
    assert.deepEqual(q[0].headers, {n: '4'})
    assert.deepEqual(q[1].body, big)
    const s2 = e2.openSession('c', {deliver: () => {}, writable: () => true})
    e2.ack(s2, e2.get(s2, 'g')!.deliveryTag)
    await store2.flush()
    assert.equal((store2.db.prepare('SELECT COUNT(*) AS n FROM sealed_groups').get() as {n: number}).n, 0, 'the group went with its last message')

    // an altered row (its queue column changed) is refused, not delivered from the wrong queue
    e2.declareQueue('other', {durable: true})
    e2.publish('', 'g', Buffer.from('moved?'), {messageId: 'm-1'})
    await store2.close()
    const db = new Database(join(dir, 'broker.db'))
    db.prepare("UPDATE messages SET queue = 'other' WHERE message_id = 'm-1'").run()
    // and the per-queue index too, so the broker reads 'other' at all
    db.prepare("INSERT OR REPLACE INTO queue_stats (queue, messages, bytes) VALUES ('other', 1, 6)").run()
    db.close()
    const store3 = new DurableStore(dir, 0, {keyFile})
    const e3 = new Engine({store: store3})
    assert.deepEqual(peekQueue(e3, 'other'), [])
    assert.deepEqual(store3.unreadable.map((u) => [u.messageId, /differ from its sealed record/.test(u.reason)]), [['m-1', true]])
    await store3.close()
  } finally {
    h.cleanup()
  }
})

test('publishes and acks interleaved in one commit still share one sealed group; the acked ones are gone after a reopen', async () => {
  await withStores(async (openStore) => {
    const store = openStore()
    const e = new Engine({store})
    e.declareQueue('mix', {durable: true})
    for (let i = 0; i < 10; i++) e.publish('', 'mix', Buffer.from(`old ${i}`), {messageId: `old-${i}`})
    await store.flush()
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    // what a busy broker's commit holds: each new message's insert next to an ack of an older one
    for (let i = 0; i < 10; i++) {
      e.publish('', 'mix', Buffer.from(`new ${i}`), {messageId: `new-${i}`})
      e.ack(s, e.get(s, 'mix')!.deliveryTag)
    }
    await store.flush()
    const groupsOfNew = store.db.prepare("SELECT COUNT(DISTINCT group_id) AS n FROM messages WHERE message_id LIKE 'new-%'").get() as {n: number}
    assert.equal(groupsOfNew.n, 1, 'the ten new messages of one commit are sealed as one group, not one group each')
    assert.equal((store.db.prepare('SELECT COUNT(*) AS n FROM sealed_groups').get() as {n: number}).n, 1, "the old group went with its last ack")
    await store.close()
    const store2 = openStore()
    const e2 = new Engine({store: store2})
    assert.deepEqual(peekQueue(e2, 'mix').map((m) => m.body.toString()), Array.from({length: 10}, (_, i) => `new ${i}`))
    await store2.close()
  })
})

test('bodies in shared memory (as the frame parser makes big ones) reach broker.db by reference, sealed, and come back intact after a reopen', async () => {
  const h = tempHome()
  const dir = join(h.dir, 'data')
  const keyFile = join(h.dir, 'secrets', 'broker.key')
  const shared = (n: number, seed: number) => {
    const b = Buffer.from(new SharedArrayBuffer(n))
    for (let i = 0; i < n; i++) b[i] = (i * seed + 11) & 0xff
    return b
  }
  try {
    const store = new DurableStore(dir, 0, {keyFile})
    const e = new Engine({store})
    e.declareQueue('s', {durable: true})
    // a small one before, between and after: records of both kinds in one packed run, in order
    const bodies = [Buffer.from('first'), shared(64 * 1024, 3), shared(20 * 1024, 5), shared(300 * 1024 + 1, 7), Buffer.from('last')]
    bodies.forEach((b, i) => e.publish('', 's', b, {headers: i === 3 ? {k: 'v'} : {}, messageId: `m-${i}`}))
    await store.flush()
    const rows = store.db.prepare('SELECT message_id AS id, group_id AS g, length(body) AS n, size FROM messages ORDER BY seq').all() as {id: string; g: number | null; n: number; size: number}[]
    assert.deepEqual(rows.map((r) => [r.id, r.size]), bodies.map((b, i) => [`m-${i}`, b.length]))
    for (const i of [1, 3]) {
      assert.equal(rows[i].g, null, 'a body of 64 KiB or more is sealed in its own row')
      const stored = store.db.prepare('SELECT headers, body, seg, seg_off FROM messages WHERE message_id = ?').get(`m-${i}`) as {headers: Buffer; body: Buffer; seg: number; seg_off: number}
      assert.equal(stored.body.length, 0, 'its ciphertext is in a body segment')
      const seg = readFileSync(segmentFile(join(dir, 'bodies'), stored.seg)).subarray(stored.seg_off, stored.seg_off + bodies[i].length)
      assert.equal(seg.length, bodies[i].length)
      assert.equal(stored.headers.length, 12 + 4 + (i === 3 ? '{"k":"v"}'.length : 0) + 16)
      assert.equal(seg.indexOf(bodies[i].subarray(0, 64)), -1, 'no plaintext in the segment')
      assert.equal(stored.headers.indexOf('"k"'), -1, 'headers sealed too')
    }
    await store.close()
    const store2 = new DurableStore(dir, 0, {keyFile})
    const e2 = new Engine({store: store2})
    const q = peekQueue(e2, 's')
    assert.deepEqual(q.map((m) => m.messageId), bodies.map((_, i) => `m-${i}`))
    q.forEach((m, i) => assert.ok(m.body.equals(bodies[i]), `body ${i}`))
    assert.deepEqual(q[3].headers, {k: 'v'})
    // acks of big messages (deleted by seq and size, no read of the row): gone after a reopen, and the index agrees
    const s2 = e2.openSession('c', {deliver: () => {}, writable: () => true})
    for (let i = 0; i < 2; i++) e2.ack(s2, e2.get(s2, 's')!.deliveryTag)
    await store2.flush()
    assert.deepEqual(store2.queueIndex().get('s'), {bytes: bodies.slice(2).reduce((n, b) => n + b.length, 0), messages: 3})
    await store2.close()

    // a split-sealed row with one body byte flipped (in its segment) is refused
    const db = new Database(join(dir, 'broker.db'))
    const at = db.prepare("SELECT seg, seg_off FROM messages WHERE message_id = 'm-3'").get() as {seg: number; seg_off: number}
    db.close()
    const segPath = segmentFile(join(dir, 'bodies'), at.seg)
    const segBytes = readFileSync(segPath)
    segBytes[at.seg_off + 100] ^= 1
    writeFileSync(segPath, segBytes)
    const store3 = new DurableStore(dir, 0, {keyFile})
    assert.deepEqual(peekQueue(new Engine({store: store3}), 's').map((m) => m.messageId), ['m-2', 'm-4'])
    assert.deepEqual(store3.unreadable.map((u) => [u.messageId, /authentication failed/.test(u.reason)]), [['m-3', true]])
    await store3.close()
  } finally {
    h.cleanup()
  }
})

test('acks of many messages in one commit (several delete chunks, two queues, two groups, a deleted seq acked again) leave the right rows, groups and per-queue index after a reopen', async () => {
  await withStores(async (openStore) => {
    const store = openStore()
    const e = new Engine({store})
    e.declareQueue('a', {durable: true})
    e.declareQueue('b', {durable: true})
    // group 1: 60 of a, 10 of b; group 2: 40 of a
    for (let i = 0; i < 60; i++) e.publish('', 'a', Buffer.from(`a${i}`), {messageId: `a-${i}`})
    for (let i = 0; i < 10; i++) e.publish('', 'b', Buffer.from(`b${i}`), {messageId: `b-${i}`})
    await store.flush()
    for (let i = 60; i < 100; i++) e.publish('', 'a', Buffer.from(`a${i}`), {messageId: `a-${i}`})
    await store.flush()
    const groups = () => (store.db.prepare('SELECT COUNT(*) AS n FROM sealed_groups').get() as {n: number}).n
    assert.equal(groups(), 2)
    // one commit acks 75 of a (all of group 1's a, 15 of group 2) and all of b: group 1 goes, group 2 stays
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    for (let i = 0; i < 75; i++) e.ack(s, e.get(s, 'a')!.deliveryTag)
    for (let i = 0; i < 10; i++) e.ack(s, e.get(s, 'b')!.deliveryTag)
    // a delete of a row already gone (as a purge racing an ack can send) changes nothing
    store.deleteMessage(1, 2)
    await store.flush()
    assert.equal(groups(), 1, 'the group of the first commit went with its last row; the second stays')
    const stats = store.db.prepare('SELECT queue, messages, bytes FROM queue_stats ORDER BY queue').all()
    assert.deepEqual(stats, [
      {bytes: 25 * 3, messages: 25, queue: 'a'},
      {bytes: 0, messages: 0, queue: 'b'},
    ])
    await store.close()
    const store2 = openStore()
    const e2 = new Engine({store: store2})
    assert.deepEqual(peekQueue(e2, 'a').map((m) => m.body.toString()), Array.from({length: 25}, (_, i) => `a${75 + i}`))
    assert.deepEqual(peekQueue(e2, 'b'), [])
    await store2.close()
  })
})

test('acks as runs of consecutive seqs (one range delete each) and as scattered seqs in one commit delete exactly the acked rows', async () => {
  await withStores(async (openStore) => {
    const store = openStore()
    const e = new Engine({store})
    e.declareQueue('r', {durable: true})
    for (let i = 0; i < 40; i++) e.publish('', 'r', Buffer.from(`r${i}`), {messageId: `r-${i}`})
    await store.flush()
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    const tags = Array.from({length: 40}, () => e.get(s, 'r')!.deliveryTag)
    // runs of 10 and 9 (a gap at 10 between them), singles, a run of 3, and two in descending order
    const acked = [...Array.from({length: 10}, (_, i) => i), ...Array.from({length: 9}, (_, i) => 11 + i), 21, 23, 27, 28, 29, 39, 38]
    for (const i of acked) e.ack(s, tags[i])
    await store.flush()
    const left = Array.from({length: 40}, (_, i) => i).filter((i) => !acked.includes(i))
    assert.deepEqual(store.db.prepare('SELECT message_id FROM messages ORDER BY seq').pluck().all(), left.map((i) => `r-${i}`))
    assert.deepEqual(store.queueIndex().get('r'), {bytes: left.reduce((n, i) => n + `r${i}`.length, 0), messages: left.length})
    await store.close()
    const store2 = openStore()
    assert.deepEqual(peekQueue(new Engine({store: store2}), 'r').map((m) => m.body.toString()), left.map((i) => `r${i}`))
    await store2.close()
  })
})

test('delivery counts reach broker.db whether a message was delivered before its insert was committed or after', async () => {
  await withStores(async (openStore) => {
    const store = openStore()
    const e = new Engine({store})
    e.declareQueue('dc', {durable: true})
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    e.publish('', 'dc', Buffer.from('before'), {messageId: 'before'})
    // delivered twice before the commit that inserts it
    e.nack(s, e.get(s, 'dc')!.deliveryTag, true)
    e.nack(s, e.get(s, 'dc')!.deliveryTag, true)
    await store.flush()
    e.publish('', 'dc', Buffer.from('after'), {messageId: 'after'})
    await store.flush()
    // 'before' a third time, 'after' once: both after their inserts were committed
    const d1 = e.get(s, 'dc')!
    const d2 = e.get(s, 'dc')!
    assert.deepEqual([d1.msg.messageId, d1.msg.deliveryCount, d2.msg.messageId, d2.msg.deliveryCount], ['before', 3, 'after', 1])
    await store.flush()
    await store.close()
    const store2 = openStore()
    const e2 = new Engine({store: store2})
    const q = peekQueue(e2, 'dc')
    // stored 3 and 1; peekQueue's get is one delivery more
    assert.deepEqual(q.map((m) => [m.messageId, m.deliveryCount, m.redelivered]), [['before', 4, true], ['after', 2, true]])
    await store2.close()
  })
})

test('big bodies: a new broker.db gets STORE_PAGE_BYTES pages and one made with 4 KiB or 16 KiB pages (16 KiB: stores made from s25 to s28) keeps them; big messages inserted and acked across the batches of one commit leave the right rows and index', async () => {
  const big = (n: number, seed: number) => {
    const b = Buffer.from(new SharedArrayBuffer(n))
    for (let i = 0; i < n; i++) b[i] = (i * seed + 1) & 0xff
    return b
  }
  const pageSize = (st: DurableStore) => st.db.pragma('page_size', {simple: true})
  // an existing broker.db keeps its page size (4 KiB before s25, 16 KiB from s25 to s28), and its messages
  for (const oldPage of [4096, 16_384]) {
    const old = tempHome()
    try {
      mkdirSync(join(old.dir, 'data'), {mode: 0o700, recursive: true})
      const db = new Database(join(old.dir, 'data', 'broker.db'))
      db.pragma(`page_size = ${oldPage}`)
      db.pragma('journal_mode = WAL')
      db.exec('CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT)')
      db.close()
      const open = () => new DurableStore(join(old.dir, 'data'), 0, {keyFile: join(old.dir, 'secrets', 'broker.key')})
      const st = open()
      assert.equal(pageSize(st), oldPage)
      const e = new Engine({store: st})
      e.declareQueue('o', {durable: true})
      const bodies = [big(200 * 1024, 3), Buffer.from('small'), ...Array.from({length: 30}, (_, i) => Buffer.from(`s${i}`))]
      bodies.forEach((b, i) => e.publish('', 'o', b, {messageId: `o-${i}`}))
      await st.flush()
      // acks of a run of small ones (a range delete) on the old page size
      const s = e.openSession('c', {deliver: () => {}, writable: () => true})
      const tags = bodies.map(() => e.get(s, 'o')!.deliveryTag)
      for (const t of tags.slice(5, 25)) e.ack(s, t)
      await st.close()
      const st2 = open()
      assert.equal(pageSize(st2), oldPage)
      const kept = [...bodies.slice(0, 5), ...bodies.slice(25)]
      const got = peekQueue(new Engine({store: st2}), 'o')
      assert.equal(got.length, kept.length)
      got.forEach((m, i) => assert.ok(m.body.equals(kept[i])))
      await st2.close()
    } finally {
      old.cleanup()
    }
  }

  const h = tempHome()
  try {
    const {e, hold, release, store} = heldStore(h.dir)
    assert.equal(pageSize(store), STORE_PAGE_BYTES)
    e.declareQueue('b', {durable: true})
    const bodies = [big(64 * 1024, 3), big(1024 * 1024 + 5, 7), big(300 * 1024, 11)]
    e.publish('', 'b', bodies[0], {messageId: 'b-0'})
    await store.flush()
    const s = e.openSession('c', {deliver: () => {}, writable: () => true})
    const confirms: Promise<void>[] = []
    const confirm = () => confirms.push(new Promise((resolve, reject) => store.afterCommit((err) => (err ? reject(err) : resolve()))))
    hold()
    // a first batch stuck on the lock (ack of b-0); then b-1 inserted, then b-1 acked and b-2 inserted:
    // those two batches go in one transaction once the lock is released
    e.ack(s, e.get(s, 'b')!.deliveryTag)
    confirm()
    await turn()
    e.publish('', 'b', bodies[1], {messageId: 'b-1'})
    confirm()
    await turn()
    e.ack(s, e.get(s, 'b')!.deliveryTag)
    e.publish('', 'b', bodies[2], {messageId: 'b-2'})
    confirm()
    await turn()
    release()
    await Promise.all(confirms)
    assert.deepEqual(store.queueIndex().get('b'), {bytes: bodies[2].length, messages: 1})
    assert.deepEqual(store.db.prepare('SELECT message_id AS id FROM messages').all(), [{id: 'b-2'}])
    await store.close()
    const again = new DurableStore(join(h.dir, 'data'), 0, {keyFile: join(h.dir, 'secrets', 'broker.key')})
    const q = peekQueue(new Engine({store: again}), 'b')
    assert.deepEqual(q.map((m) => m.messageId), ['b-2'])
    assert.ok(q[0].body.equals(bodies[2]))
    await again.close()
  } finally {
    h.cleanup()
  }
})
