/**
 * Nothing accepted is destroyed: every queue has a dead-letter queue by default, a message mq recv
 * rejects lands there, and every view (queue list, message status, stats) says so.
 */
import assert from 'node:assert/strict'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import Database from 'better-sqlite3'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'

interface QueueRow {
  name: string
  messages: number
  unacked: number
  dead_letter?: string
}

describe('default dead-letter queues (real broker, real CLI)', () => {
  let broker: BrokerProcess
  const mq = (args: string[], input?: string) => runCli(args, {env: broker.cliEnv(), input})
  const queues = async (): Promise<Map<string, QueueRow>> => {
    const r = await mq(['queue', 'list', '--json'])
    assert.equal(r.code, 0, r.stderr)
    return new Map((JSON.parse(r.stdout) as QueueRow[]).map((q) => [q.name, q]))
  }

  before(async () => {
    broker = await spawnBroker()
  })
  after(async () => {
    await broker?.cleanup()
  })

  test('a queue is declared with NAME.dlq, visible in queue list; the .dlq has none of its own (no chain)', async () => {
    assert.equal((await mq(['queue', 'declare', 'inbox'])).code, 0)
    assert.equal((await mq(['queue', 'declare', 'inbox'])).code, 0, 'declaring it again the same way is a no-op')
    const q = await queues()
    assert.equal(q.get('inbox')?.dead_letter, 'inbox.dlq')
    assert.ok(q.has('inbox.dlq'))
    assert.equal(q.get('inbox.dlq')?.dead_letter, undefined)
    assert.equal(q.get('default_queue')?.dead_letter, 'default_queue.dlq')
    assert.ok(![...q.keys()].some((n) => n.endsWith('.dlq.dlq')))
    // an explicit dead-letter queue is respected and gets none of its own either
    assert.equal((await mq(['queue', 'declare', 'orders', '--dead-letter', 'graveyard'])).code, 0)
    const q2 = await queues()
    assert.equal(q2.get('orders')?.dead_letter, 'graveyard')
    assert.equal(q2.get('graveyard')?.dead_letter, undefined)
    assert.ok(!q2.has('orders.dlq'))
  })

  test('mq recv rejects a message it will not accept: it is in inbox.dlq, and status, stats and queue list agree', async () => {
    const sent = await mq(['send', '--queue', 'inbox', '--plain', 'plaintext nobody accepted'])
    assert.equal(sent.code, 0, sent.stderr)
    const id = sent.stdout.trim()
    // admin's end-to-end identity comes with the broker's first start
    const r = await mq(['recv', '--queue', 'inbox', '--timeout', '1s'])
    assert.equal(r.code, 65, r.stderr)
    assert.match(r.stderr, /rejected message .* E_FORMAT_REFUSED/)
    const q = await queues()
    assert.equal(q.get('inbox')?.messages, 0)
    assert.equal(q.get('inbox.dlq')?.messages, 1)
    const st = JSON.parse((await mq(['message', 'status', id, '--json'])).stdout)
    assert.equal(st.status, 'dead-lettered')
    assert.equal(st.queue, 'inbox.dlq')
    const stats = JSON.parse((await mq(['stats', '--json'])).stdout)
    assert.equal(stats.totals.dead_lettered, 1, JSON.stringify(stats.totals))
    // still readable, with the reason, by whoever accepts it
    const again = await mq(['recv', '--queue', 'inbox.dlq', '--accept', 'plain', '--json', '--timeout', '5s'])
    assert.equal(again.code, 0, again.stderr)
    const m = JSON.parse(again.stdout)
    assert.equal(m.payload, 'plaintext nobody accepted')
    assert.match(m.headers['x-death-reason'], /E_FORMAT_REFUSED/)
  })

  test('a reject on a dead-letter queue keeps the message there (it is not dropped)', async () => {
    const sent = await mq(['send', '--queue', 'inbox.dlq', '--plain', 'parked'])
    assert.equal(sent.code, 0, sent.stderr)
    const r = await mq(['recv', '--queue', 'inbox.dlq', '--timeout', '1s'])
    assert.equal(r.code, 65, r.stderr)
    const q = await queues()
    assert.equal(q.get('inbox.dlq')?.messages, 1, 'the rejected message is back in inbox.dlq once the rejecting connection closed')
    const st = JSON.parse((await mq(['message', 'status', sent.stdout.trim(), '--json'])).stdout)
    assert.notEqual(st.status, 'dead-lettered')
    assert.equal(st.queue, 'inbox.dlq')
  })

  test('upgrade: a durable queue stored by an older version without a dead-letter queue gets NAME.dlq on restart', async () => {
    assert.equal((await mq(['queue', 'declare', 'legacy', '--durable'])).code, 0)
    await broker.stop()
    // what an older version left behind: the queue row with no dead-letter queue, and no legacy.dlq
    const db = new Database(join(broker.home, 'data', 'broker.db'))
    db.prepare("DELETE FROM queues WHERE name = 'legacy.dlq'").run()
    assert.deepEqual(db.prepare("SELECT name, dead_letter FROM queues WHERE name LIKE 'legacy%'").all(), [{dead_letter: null, name: 'legacy'}])
    db.close()
    await broker.restart()
    const q = await queues()
    assert.equal(q.get('legacy')?.dead_letter, 'legacy.dlq')
    assert.ok(q.has('legacy.dlq'))
    const sent = await mq(['send', '--queue', 'legacy', '--plain', 'old queue'])
    assert.equal(sent.code, 0, sent.stderr)
    assert.equal((await mq(['recv', '--queue', 'legacy', '--timeout', '1s'])).code, 65)
    assert.equal((await queues()).get('legacy.dlq')?.messages, 1)
  })
})
