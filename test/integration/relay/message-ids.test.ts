import assert from 'node:assert/strict'
import Database from 'better-sqlite3'
import {randomBytes} from 'node:crypto'
import {mkdirSync} from 'node:fs'
import {join} from 'node:path'
import {describe, test} from 'node:test'

import {RelayStore} from '../../../src/lib/relay/store.js'
import {tempHome} from '../../helpers/home.js'
import {tempMysqlDatabase} from '../../helpers/services.js'

const text = (to: Buffer, from: Buffer) => ({body: Buffer.from('hi'), file: null, from, size: 2, to, type: 3})

/**
 * Message ids are never reused (docs/relay.md), also once the newest message was pulled (deleted),
 * also across a restart: an acknowledged id never names a second message.
 */
async function neverReused(url: string): Promise<void> {
  const home = tempHome('mq-relay-ids-')
  const dataDir = join(home.dir, 'data')
  const to = randomBytes(16)
  const from = randomBytes(16)
  let store = await RelayStore.open({dataDir, url})
  try {
    const a = await store.addMessage(text(to, from))
    const b = await store.addMessage(text(to, from))
    await store.deleteMessages([a, b])
    const c = await store.addMessage(text(to, from))
    assert.ok(c > b, `id ${c} after ${b} was deleted`)
    await store.deleteMessages([c])
    await store.close()
    store = await RelayStore.open({dataDir, url})
    const d = await store.addMessage(text(to, from))
    assert.ok(d > c, `id ${d} after a restart, ${c} deleted before it`)
    // a batch of one turn: consecutive fresh ids
    const batch = await Promise.all([1, 2, 3].map(() => store.addMessage(text(to, from))))
    assert.ok(batch[0] > d && batch[1] > batch[0] && batch[2] > batch[1])
    assert.deepEqual((await store.pending(to)).map((m) => m.id), [d, ...batch])
  } finally {
    await store.close()
    home.cleanup()
  }
}

describe('relay message ids are never reused', () => {
  test('SQLite', async () => {
    await neverReused('sqlite')
  })

  test('MySQL', async () => {
    const db = await tempMysqlDatabase()
    try {
      await neverReused(db.url)
    } finally {
      await db.drop()
    }
  })

  test('SQLite: a relay.db of the AUTOINCREMENT schema keeps its messages and its highest id when migrated', async () => {
    const home = tempHome('mq-relay-ids-mig-')
    const dataDir = join(home.dir, 'data')
    mkdirSync(dataDir, {recursive: true})
    const to = randomBytes(16)
    // the schema as migration 1 left it, with id 7 delivered (deleted) and 5, 6 still queued
    const db = new Database(join(dataDir, 'relay.db'))
    db.exec(`CREATE TABLE relay_migrations (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL, applied_at VARCHAR(40) NOT NULL);
      INSERT INTO relay_migrations VALUES (1, 'relay clients and messages', '2026-12-01T00:00:00.000Z');
      CREATE TABLE relay_clients (id BLOB NOT NULL PRIMARY KEY, name TEXT NOT NULL UNIQUE, public_key BLOB NOT NULL, last_seen TEXT NOT NULL, created_at TEXT NOT NULL);
      CREATE TABLE relay_messages (id INTEGER PRIMARY KEY AUTOINCREMENT, to_client BLOB NOT NULL, from_client BLOB NOT NULL, type INTEGER NOT NULL, size INTEGER NOT NULL, body BLOB, file TEXT, created_at TEXT NOT NULL);
      CREATE INDEX relay_messages_to ON relay_messages (to_client, id);`)
    const ins = db.prepare('INSERT INTO relay_messages (id, to_client, from_client, type, size, body, file, created_at) VALUES (?, ?, ?, 3, 2, ?, NULL, ?)')
    for (const id of [5, 6, 7]) ins.run(id, to, to, Buffer.from(`m${id}`), '2026-12-01T00:00:00.000Z')
    db.prepare('DELETE FROM relay_messages WHERE id = 7').run()
    db.close()
    const store = await RelayStore.open({dataDir, url: 'sqlite'})
    try {
      assert.deepEqual((await store.pending(to)).map((m) => m.id), [5, 6])
      assert.deepEqual(await store.body(6), Buffer.from('m6'))
      assert.equal(await store.addMessage(text(to, to)), 8, 'the id after the highest ever given, not after the highest stored')
    } finally {
      await store.close()
      home.cleanup()
    }
  })
})
