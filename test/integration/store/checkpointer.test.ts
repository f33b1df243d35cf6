import assert from 'node:assert/strict'
import {statSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'

import {openStore} from '../../../src/lib/store/sql.js'
import {tempHome} from '../../helpers/home.js'
import {waitFor} from '../../helpers/services.js'

test('an embedded store copies its WAL into the database file on the checkpointer thread, not in a commit', async () => {
  const t = tempHome()
  const store = await openStore({dataDir: t.dir, file: 'c.db', url: 'sqlite'})
  try {
    await store.run('CREATE TABLE rows (id INTEGER PRIMARY KEY, body BLOB NOT NULL)')
    const body = Buffer.alloc(1024, 7)
    // 2 MiB: far below the writers' fallback auto-checkpoint (64 MiB), so only the thread moves it
    await store.transaction(async (tx) => {
      for (let i = 0; i < 2048; i++) await tx.run('INSERT INTO rows (id, body) VALUES (?, ?)', [i, body])
    })
    const main = join(t.dir, 'c.db')
    await waitFor(() => statSync(main).size > 2 * 1024 * 1024, 5000)
    const row = await store.get<{n: number}>('SELECT count(*) AS n FROM rows')
    assert.equal(row?.n, 2048)
  } finally {
    await store.close()
    t.cleanup()
  }
})

test('the same statement text is prepared once and keeps answering after a schema change', async () => {
  const t = tempHome()
  const store = await openStore({dataDir: t.dir, file: 's.db', url: 'sqlite'})
  try {
    await store.run('CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)')
    for (let i = 0; i < 3; i++) await store.run('INSERT INTO kv (k, v) VALUES (?, ?)', [`k${i}`, `v${i}`])
    assert.deepEqual(await store.all('SELECT * FROM kv ORDER BY k'), [{k: 'k0', v: 'v0'}, {k: 'k1', v: 'v1'}, {k: 'k2', v: 'v2'}])
    await store.run('ALTER TABLE kv ADD COLUMN n INTEGER DEFAULT 5')
    assert.deepEqual(await store.all('SELECT * FROM kv ORDER BY k'), [{k: 'k0', n: 5, v: 'v0'}, {k: 'k1', n: 5, v: 'v1'}, {k: 'k2', n: 5, v: 'v2'}])
  } finally {
    await store.close()
    t.cleanup()
  }
})
