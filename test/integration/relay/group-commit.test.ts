import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {join} from 'node:path'
import {describe, test} from 'node:test'

import {RelayStore} from '../../../src/lib/relay/store.js'
import {tempHome} from '../../helpers/home.js'
import {tempMysqlDatabase} from '../../helpers/services.js'
import {watchCommits} from './harness.js'

/**
 * Texts that arrive in the same event-loop turn share one commit (RelayStore.addMessage): each
 * still gets its own id, every one is stored, and a batch that fails keeps none of its rows.
 */
async function sharedCommit(url: string | undefined, journal = true): Promise<void> {
  const home = tempHome('mq-relay-gc-')
  const store = await RelayStore.open({dataDir: join(home.dir, 'data'), journal: journal ? undefined : false, url: url ?? 'sqlite'})
  try {
    const to = randomBytes(16)
    const from = randomBytes(16)
    const commits = watchCommits(store)
    const bodies = Array.from({length: 12}, (_, i) => Buffer.from(`text ${i}`))
    const ids = await Promise.all(bodies.map((body) => store.addMessage({body, file: null, from, size: body.length, to, type: 3})))
    commits.restore()
    assert.deepEqual(commits.sizes, [12], 'one commit (a journal write on SQLite) for the turn')
    assert.equal(new Set(ids).size, ids.length)
    assert.deepEqual([...ids].sort((a, b) => a - b), ids, 'ids in arrival order')
    const stored = await store.pending(to)
    assert.deepEqual(stored.map((m) => m.id), ids)
    for (const [i, m] of stored.entries()) assert.deepEqual(await store.body(m.id), bodies[i])

    // one bad row (no recipient) fails the whole turn: none of it is kept, every sender hears of it
    const other = randomBytes(16)
    const good = Buffer.from('good')
    const results = await Promise.allSettled([
      store.addMessage({body: good, file: null, from, size: 4, to: other, type: 3}),
      store.addMessage({body: good, file: null, from, size: 4, to: null as unknown as Buffer, type: 3}),
      store.addMessage({body: good, file: null, from, size: 4, to: other, type: 3}),
    ])
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected', 'rejected'])
    assert.equal((await store.pending(other)).length, 0)

    // a message alone in its turn is a plain insert and is stored too
    const alone = await store.addMessage({body: good, file: null, from, size: 4, to: other, type: 3})
    assert.deepEqual((await store.pending(other)).map((m) => m.id), [alone])
    assert.ok(alone > ids.at(-1)!)
  } finally {
    await store.close()
    home.cleanup()
  }
}

describe('relay store: texts of one turn share a commit', () => {
  test('SQLite', async () => {
    await sharedCommit(undefined)
  })

  test('SQLite without the journal', async () => {
    await sharedCommit(undefined, false)
  })

  test('MySQL', async () => {
    const db = await tempMysqlDatabase()
    try {
      await sharedCommit(db.url)
    } finally {
      await db.drop()
    }
  })
})
