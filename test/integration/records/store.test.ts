import assert from 'node:assert/strict'
import {randomBytes, scryptSync} from 'node:crypto'
import {after, before, describe, it} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {RecordsStore} from '../../../src/lib/records/store.js'
import {migrate} from '../../../src/lib/store/sql.js'
import {RECORDS_MIGRATIONS, RECORDS_MIGRATIONS_TABLE} from '../../../src/lib/records/migrations.js'
import {tempHome} from '../../helpers/home.js'
import {tempMysqlDatabase} from '../../helpers/services.js'

/** the fields a login decides on (the full user row carries more) */
const pick = (u: {email: string; role: string} | undefined) => u && {email: u.email, role: u.role}

const backends: {name: string; url: () => Promise<{url: string; drop: () => Promise<void>}>}[] = [
  {name: 'sqlite', url: async () => ({drop: async () => {}, url: 'sqlite'})},
  {name: 'mysql', url: async () => tempMysqlDatabase()},
]

for (const backend of backends) {
  describe(`records store on ${backend.name}`, () => {
    const h = tempHome()
    const home = new MqHome(h.dir)
    let db: {url: string; drop: () => Promise<void>}
    let store: RecordsStore

    before(async () => {
      db = await backend.url()
      store = await RecordsStore.open({config: {store: {url: db.url}}, home, url: db.url})
    })
    after(async () => {
      await store?.close()
      await db?.drop()
      h.cleanup()
    })

    it('migrations are versioned and re-running them is a no-op', async () => {
      assert.deepEqual(await migrate(store.sql, RECORDS_MIGRATIONS_TABLE, RECORDS_MIGRATIONS), [])
      const rows = await store.sql.all<{id: number}>(`SELECT id FROM ${RECORDS_MIGRATIONS_TABLE}`)
      assert.deepEqual(rows.map((r) => Number(r.id)), RECORDS_MIGRATIONS.map((m) => m.id))
    })

    it('registers idempotently, seals the body and hashes the number', async () => {
      const payload = {message_body: 'Top secret body 4711', metadata: {order: 'abc-123'}, sender_number: '+4915212345678'}
      const a = await store.register({clientId: 'alice', messageId: 'msg-1', payload})
      assert.equal(a.created, true)
      assert.equal(a.record.status, 'queued')
      assert.equal(a.record.sender_masked, '+4915****5678')
      assert.equal(a.record.sender_hash, store.hasher.hash('+4915212345678'))
      const again = await store.register({clientId: 'alice', messageId: 'msg-1', payload})
      assert.equal(again.created, false)
      await assert.rejects(store.register({clientId: 'mallory', messageId: 'msg-1', payload}), (e: Error & {code?: string}) => e.code === 'E_MESSAGE_ID_TAKEN')
      const raw = await store.sql.all<Record<string, unknown>>('SELECT * FROM messages')
      assert.equal(raw.length, 1)
      const dump = JSON.stringify(raw, (_k, v) => (v && v.type === 'Buffer' ? Buffer.from(v.data).toString('latin1') : v))
      for (const secret of ['Top secret', '4711', '+4915212345678', '15212345678', 'abc-123']) assert.equal(dump.includes(secret), false, `${secret} leaked`)
      assert.deepEqual((await store.payload('msg-1'))!.payload, payload)
    })

    it('tracks status: retrying, delivered once, delivered stays delivered', async () => {
      await store.register({clientId: 'alice', messageId: 'msg-2', payload: {message_body: 'b', sender_number: '+4915200000000'}})
      const p = await store.setStatus('msg-2', 'processing', {attempts: 3, error: 'broker down'})
      assert.equal(p.record.status, 'processing')
      assert.equal(p.record.attempts, 3)
      assert.equal(p.record.last_error, 'broker down')
      const d = await store.markDelivered('msg-2', 4)
      assert.equal(d.changed, true)
      assert.equal(d.record.status, 'delivered')
      assert.ok(d.record.delivered_at)
      assert.equal((await store.markDelivered('msg-2', 5)).changed, false)
      assert.equal((await store.setStatus('msg-2', 'failed', {error: 'late'})).changed, false)
      assert.equal((await store.get('msg-2'))!.status, 'delivered')
      await assert.rejects(store.markDelivered('nope'), (e: Error & {code?: string}) => e.code === 'E_NOT_FOUND')
    })

    it('lists, filters and counts the seed figures', async () => {
      await store.register({clientId: 'bob', messageId: 'msg-3', payload: {message_body: 'c', sender_number: '+4915200000000'}})
      await store.setStatus('msg-3', 'failed', {attempts: 10, error: 'gave up'})
      await store.register({clientId: 'bob', messageId: 'msg-old', payload: {message_body: 'd', sender_number: '+4915200000000'}, queuedAt: new Date(Date.now() - 3 * 86_400_000).toISOString()})
      assert.deepEqual((await store.list({client: 'bob'})).map((m) => m.message_id), ['msg-3', 'msg-old'])
      assert.deepEqual((await store.list({status: 'failed'})).map((m) => m.message_id), ['msg-3'])
      assert.equal((await store.list({limit: 1})).length, 1)
      await store.upsertClient({expires_at: null, fingerprint: 'ab'.repeat(32), identity: 'alice', issued_at: new Date().toISOString(), reason: null, revoked_at: null, serial: 'A1', status: 'active'})
      await store.upsertClient({expires_at: null, fingerprint: 'cd'.repeat(32), identity: 'bob', issued_at: new Date().toISOString(), reason: null, revoked_at: null, serial: 'b2', status: 'active'})
      assert.equal(await store.markClientRevoked('b2', 'keyCompromise'), 1)
      await store.touchClient('carol', 'c3')
      await store.createUser('admin@example.com', 'longenough', 'admin')
      const s = await store.stats()
      assert.deepEqual(s.messages, {delivered: 1, failed: 1, last_24h: 3, last_7d: 4, processing: 0, queued: 2, total: 4})
      assert.deepEqual(s.clients, {active: 2, expired: 0, revoked: 1, total: 3})
      assert.deepEqual(s.users, {total: 1})
      const revoked = await store.listClients({status: 'revoked'})
      assert.equal(revoked[0].identity, 'bob')
      assert.equal(revoked[0].reason, 'keyCompromise')
    })

    it('users and audit log', async () => {
      await assert.rejects(store.createUser('admin@example.com', 'longenough', 'admin'), (e: Error & {code?: string}) => e.code === 'E_USER_EXISTS')
      const u = await store.verifyUser('admin@example.com', 'longenough')
      assert.deepEqual([u?.email, u?.role, u?.client_id], ['admin@example.com', 'admin', null])
      assert.ok(u?.last_login_at)
      assert.equal(await store.verifyUser('nobody@example.com', 'longenough'), undefined)
      assert.equal(await store.verifyUser('admin@example.com', 'wrong-password'), undefined)
      await store.audit({actor: 'admin', data: {message_id: 'msg-1'}, event_type: 'message.decrypt', ip: '127.0.0.1', severity: 'warning'})
      const log = await store.auditLog(5)
      assert.equal(log[0].event_type, 'message.decrypt')
      assert.equal(log[0].severity, 'warning')
    })

    it('passwords: scrypt N >= 2^17; old N=2^14 rows still log in and are rehashed; absurd stored parameters are refused fast', async () => {
      const hashOf = async (email: string) => (await store.sql.get<{password_hash: string}>('SELECT password_hash FROM users WHERE email = ?', [email]))!.password_hash
      const stored = await hashOf('admin@example.com')
      assert.ok(Number(stored.split('$')[1]) >= 131_072, stored)
      // a row written by an older version: N=2^14
      const salt = randomBytes(16)
      const old = `scrypt$16384$8$1$${salt.toString('base64')}$${scryptSync('old-password', salt, 32, {N: 16_384, p: 1, r: 8}).toString('base64')}`
      await store.sql.run('INSERT INTO users (email, password_hash, role, active, created_at) VALUES (?, ?, ?, 1, ?)', ['old@example.com', old, 'user', new Date().toISOString()])
      assert.deepEqual(pick(await store.verifyUser('old@example.com', 'old-password')), {email: 'old@example.com', role: 'user'})
      const upgraded = await hashOf('old@example.com')
      assert.notEqual(upgraded, old)
      assert.equal(upgraded.split('$').slice(1, 4).join('$'), '131072$8$1')
      assert.deepEqual(pick(await store.verifyUser('old@example.com', 'old-password')), {email: 'old@example.com', role: 'user'})
      // a tampered row asking for p=200 (seconds of CPU per attempt) or N=2^24 (16 GiB)
      for (const [n, p] of [[16_384, 200], [16_777_216, 1]]) {
        await store.sql.run('UPDATE users SET password_hash = ? WHERE email = ?', [`scrypt$${n}$8$${p}$${salt.toString('base64')}$${Buffer.alloc(32).toString('base64')}`, 'old@example.com'])
        const t0 = Date.now()
        assert.equal(await store.verifyUser('old@example.com', 'old-password'), undefined)
        assert.ok(Date.now() - t0 < 500, `refused in ${Date.now() - t0} ms`)
      }
    })

    it("undelivered (the reconciler's list): queued and processing records older than a time, oldest first, in pages; failed and delivered ones never", async () => {
      const payload = {message_body: 'reconcile me', sender_number: '+4915200000000'}
      const at = (s: number) => new Date(Date.UTC(2020, 0, 1, 0, 0, s)).toISOString()
      for (const [i, id] of ['u-q1', 'u-p2', 'u-f3', 'u-d4', 'u-q5', 'u-p6'].entries()) await store.register({clientId: 'alice', messageId: id, payload, queuedAt: at(i)})
      await store.setStatus('u-p2', 'processing', {attempts: 2})
      await store.setStatus('u-p6', 'processing', {attempts: 1})
      await store.markNotAccepted(['u-f3'], 'test')
      await store.markDelivered('u-d4')
      const ours = (ms: {message_id: string}[]) => ms.map((m) => m.message_id).filter((x) => x.startsWith('u-'))
      const all = await store.undelivered({before: at(10), limit: 100})
      assert.deepEqual(ours(all.messages), ['u-q1', 'u-p2', 'u-q5', 'u-p6'])
      assert.deepEqual(all.messages.find((m) => m.message_id === 'u-p2'), {attempts: 2, client_id: 'alice', id: all.messages.find((m) => m.message_id === 'u-p2')!.id, message_id: 'u-p2', queued_at: at(1), status: 'processing'})
      assert.deepEqual(ours((await store.undelivered({before: at(4), limit: 100})).messages), ['u-q1', 'u-p2'])
      const first = (await store.undelivered({before: at(10), limit: 3})).messages
      assert.deepEqual(ours(first), ['u-q1', 'u-p2', 'u-q5'])
      const last = first.at(-1)!
      assert.deepEqual(ours((await store.undelivered({after: {at: last.queued_at, id: last.id}, before: at(10), limit: 3})).messages), ['u-p6'])
      // a refused request's record comes back when its request is retried with the same id
      const again = await store.register({clientId: 'alice', messageId: 'u-f3', payload})
      assert.deepEqual([again.created, again.record.status, again.record.last_error], [true, 'queued', null])
      for (const id of ['u-q1', 'u-p2', 'u-f3', 'u-q5', 'u-p6']) await store.markDelivered(id)
    })

    it('registers a batch (on MySQL in a few multi-row INSERTs), each item with its own outcome (taken ids, in-batch repeats, another client, bad numbers)', async () => {
      await store.register({clientId: 'alice', messageId: 'batch-old', payload: {message_body: 'before', sender_number: '+4915200000000'}})
      await store.register({clientId: 'bob', messageId: 'batch-bob', payload: {message_body: 'bob', sender_number: '+4915200000000'}})
      const ids = Array.from({length: 90}, (_, i) => `batch-${i}`)
      // a taken id and an in-batch repeat inside the first 64-row chunk, another client's id in the 16-row one
      ids[10] = 'batch-old'
      ids[20] = 'batch-3'
      ids[70] = 'batch-bob'
      const items = ids.map((id, i) => ({clientId: 'alice', messageId: id, payload: {message_body: `body ${i}`, sender_number: i === 80 ? '12345' : '+4915200000000'}}))
      let inserts = 0
      const transaction = store.sql.transaction.bind(store.sql)
      store.sql.transaction = ((fn: Parameters<typeof transaction>[0]) =>
        transaction((tx) => {
          const run = tx.run
          tx.run = (sql, params) => (/^INSERT INTO messages/.test(sql) && inserts++, run.call(tx, sql, params))
          return fn(tx).finally(() => (tx.run = run))
        })) as typeof store.sql.transaction
      let out: Awaited<ReturnType<typeof store.registerMany>>
      try {
        out = await store.registerMany(items)
      } finally {
        store.sql.transaction = transaction
      }
      const outcome = (i: number) => {
        const o = out[i]
        return 'error' in o ? o.error.code : o.created ? 'created' : 'existing'
      }
      assert.deepEqual([outcome(10), outcome(20), outcome(70), outcome(80)], ['existing', 'existing', 'E_MESSAGE_ID_TAKEN', 'E_SENDER_NUMBER'])
      const special = new Set([10, 20, 70, 80])
      assert.deepEqual(ids.flatMap((_, i) => (special.has(i) ? [] : [outcome(i)])), Array.from({length: 86}, () => 'created'))
      // MySQL: chunks of 64 + 16 + 4 + 4 + 1 rows; the 64 and 16 ones fail on their taken ids and go row by row
      if (store.sql.dialect === 'mysql') assert.equal(inserts, 5 + 64 + 16)
      for (const i of [0, 63, 64, 85, 89]) assert.equal((await store.get(ids[i]))?.status, 'queued', ids[i])
      assert.equal((await store.payload('batch-89'))?.payload.message_body, 'body 89')
      assert.equal((await store.get('batch-bob'))?.client_id, 'bob')
      // a clean batch: one statement per chunk
      inserts = 0
      store.sql.transaction = ((fn: Parameters<typeof transaction>[0]) =>
        transaction((tx) => {
          const run = tx.run
          tx.run = (sql, params) => (/^INSERT INTO messages/.test(sql) && inserts++, run.call(tx, sql, params))
          return fn(tx).finally(() => (tx.run = run))
        })) as typeof store.sql.transaction
      try {
        const clean = await store.registerMany(Array.from({length: 85}, (_, i) => ({clientId: 'alice', messageId: `clean-${i}`, payload: {message_body: `c${i}`, sender_number: '+4915200000000'}})))
        assert.ok(clean.every((o) => 'record' in o && o.created))
      } finally {
        store.sql.transaction = transaction
      }
      // one statement per chunk on MySQL (64 + 16 + 4 + 1); SQLite keeps its one-row statement
      assert.equal(inserts, store.sql.dialect === 'mysql' ? 4 : 85)
    })

    it('marks a batch delivered: each item learns whether it changed, attempts are kept; on MySQL one UPDATE per chunk', async () => {
      const ids = Array.from({length: 70}, (_, i) => `mark-${i}`)
      await store.registerMany(ids.map((id) => ({clientId: 'alice', messageId: id, payload: {message_body: 'm', sender_number: '+4915200000000'}})))
      let updates = 0
      const transaction = store.sql.transaction.bind(store.sql)
      store.sql.transaction = ((fn: Parameters<typeof transaction>[0]) =>
        transaction((tx) => {
          const run = tx.run
          tx.run = (sql, params) => (/^UPDATE messages SET status = 'delivered'/.test(sql) && updates++, run.call(tx, sql, params))
          return fn(tx).finally(() => (tx.run = run))
        })) as typeof store.sql.transaction
      const mark = async (items: {messageId: string; attempts?: number}[]) => {
        updates = 0
        const out = await store.markDeliveredMany(items)
        return {changed: out.map((o) => o.changed), updates}
      }
      try {
        // 67 ids with attempts 1 (one IN list, padded to 128), 2 with attempts 7, 1 without (attempts + 1): 3 statements
        const first = ids.slice(0, 67).map((id) => ({attempts: 1, messageId: id}))
        const r1 = await mark([...first, {attempts: 7, messageId: 'mark-67'}, {attempts: 7, messageId: 'mark-68'}, {messageId: 'mark-69'}])
        assert.deepEqual(r1.changed, Array.from({length: 70}, () => true))
        assert.equal(r1.updates, store.sql.dialect === 'mysql' ? 3 : 70)
        assert.deepEqual([(await store.get('mark-0'))!.attempts, (await store.get('mark-66'))!.attempts, (await store.get('mark-68'))!.attempts, (await store.get('mark-69'))!.attempts], [1, 1, 7, 1])
        assert.equal((await store.get('mark-5'))!.status, 'delivered')
        // all repeats: nothing changes, nothing is rewritten
        const before = (await store.get('mark-1'))!
        const r2 = await mark([{attempts: 9, messageId: 'mark-1'}, {attempts: 9, messageId: 'mark-2'}])
        assert.deepEqual(r2.changed, [false, false])
        assert.deepEqual(await store.get('mark-1'), before)
      } finally {
        store.sql.transaction = transaction
      }
      // repeats mixed with new ones (and an id twice): exact per-item outcomes
      await store.registerMany(['mark-a', 'mark-b'].map((id) => ({clientId: 'alice', messageId: id, payload: {message_body: 'm', sender_number: '+4915200000000'}})))
      const r3 = await store.markDeliveredMany([{attempts: 2, messageId: 'mark-a'}, {attempts: 2, messageId: 'mark-3'}, {attempts: 2, messageId: 'mark-b'}, {attempts: 2, messageId: 'mark-a'}])
      assert.deepEqual(r3.map((o) => o.changed), [true, false, true, false])
      assert.deepEqual([(await store.get('mark-a'))!.status, (await store.get('mark-3'))!.attempts, (await store.get('mark-b'))!.attempts], ['delivered', 1, 2])
      const r4 = await store.markDeliveredMany([{attempts: 3, messageId: 'mark-4'}, {attempts: 3, messageId: 'nope-1'}])
      assert.deepEqual(r4.map((o) => o.changed), [false, false])
    })
  })
}
