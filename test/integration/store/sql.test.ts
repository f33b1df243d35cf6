import assert from 'node:assert/strict'
import {after, before, describe, test} from 'node:test'

import {ConfigError, UnavailableError} from '../../../src/lib/errors.js'
import {type Migration, type SqlStore, migrate, openStore} from '../../../src/lib/store/sql.js'
import {tempHome} from '../../helpers/home.js'
import {tempMysqlDatabase} from '../../helpers/services.js'

const migrations: Migration[] = [
  {
    id: 1,
    mysql: ['CREATE TABLE items (id VARCHAR(64) PRIMARY KEY, body LONGBLOB NOT NULL, n INT NOT NULL)'],
    name: 'items',
    sqlite: ['CREATE TABLE items (id TEXT PRIMARY KEY, body BLOB NOT NULL, n INTEGER NOT NULL)'],
  },
  {id: 2, mysql: ['CREATE INDEX items_n ON items (n)'], name: 'items_n', sqlite: ['CREATE INDEX items_n ON items (n)']},
]

function suite(name: string, open: () => Promise<{store: SqlStore; done: () => Promise<void>}>) {
  describe(name, () => {
    let store: SqlStore
    let done: () => Promise<void>
    before(async () => {
      ;({done, store} = await open())
    })
    after(async () => {
      await store.close()
      await done()
    })

    test('migrations apply once, in order', async () => {
      assert.deepEqual(await migrate(store, 'test_migrations', migrations), [1, 2])
      assert.deepEqual(await migrate(store, 'test_migrations', migrations), [])
    })

    test('parameterised statements round-trip binary data and hostile strings', async () => {
      const body = Buffer.from([0, 1, 2, 255, 254, 39, 34, 92])
      const id = "x'); DROP TABLE items; --"
      await store.run('INSERT INTO items (id, body, n) VALUES (?, ?, ?)', [id, body, 7])
      const row = await store.get<{id: string; body: Buffer; n: number}>('SELECT id, body, n FROM items WHERE id = ?', [id])
      assert.equal(row?.id, id)
      assert.ok(Buffer.from(row!.body).equals(body))
      assert.equal(Number(row!.n), 7)
    })

    test('a failed transaction rolls back; concurrent transactions do not interleave', async () => {
      await assert.rejects(
        store.transaction(async (tx) => {
          await tx.run('INSERT INTO items (id, body, n) VALUES (?, ?, ?)', ['t1', Buffer.from('a'), 1])
          throw new Error('boom')
        }),
        /boom/,
      )
      assert.equal(await store.get('SELECT id FROM items WHERE id = ?', ['t1']), undefined)
      await Promise.all(
        Array.from({length: 20}, (_, i) =>
          store.transaction(async (tx) => {
            await tx.run('INSERT INTO items (id, body, n) VALUES (?, ?, ?)', [`c${i}`, Buffer.from('b'), i])
            await new Promise((r) => setTimeout(r, 1))
            await tx.run('UPDATE items SET n = n + 100 WHERE id = ?', [`c${i}`])
          }),
        ),
      )
      const rows = await store.all<{n: number}>("SELECT n FROM items WHERE id LIKE 'c%' ORDER BY n")
      assert.deepEqual(rows.map((r) => Number(r.n)), Array.from({length: 20}, (_, i) => i + 100))
    })
  })
}

suite('SqlStore on embedded SQLite', async () => {
  const h = tempHome()
  const store = await openStore({dataDir: `${h.dir}/data`, file: 'test.db', url: 'sqlite'})
  return {done: async () => h.cleanup(), store}
})

suite('SqlStore on MySQL/MariaDB', async () => {
  const db = await tempMysqlDatabase()
  const store = await openStore({dataDir: '/nonexistent', file: 'unused', url: db.url})
  return {done: db.drop, store}
})

test('store URLs: unknown scheme is a config error; unreachable MySQL is unavailable (69)', async () => {
  await assert.rejects(openStore({dataDir: '/tmp', file: 'x', url: 'postgres://x'}), (err: unknown) => err instanceof ConfigError && err.exit === 78)
  await assert.rejects(openStore({dataDir: '/tmp', file: 'x', url: 'mysql://root:pw@127.0.0.1:1/x'}), (err: unknown) => err instanceof UnavailableError && err.exit === 69 && !err.message.includes(':pw@'))
})
