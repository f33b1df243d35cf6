/** mq message status in cluster mode after mq queue redrive: the status follows the message, not the ack of its dead letter. */
import assert from 'node:assert/strict'
import {after, before, test} from 'node:test'
import {isDeepStrictEqual} from 'node:util'

import {type TestCluster, startCluster} from '../../helpers/cluster.js'
import {runCli} from '../../helpers/cli.js'
import {waitFor} from '../../helpers/services.js'

let cluster: TestCluster

before(async () => {
  cluster = await startCluster(2)
})

after(async () => {
  await cluster?.cleanup()
})

test('cluster mode: a redriven dead letter says sent in the queue it was moved to, then acknowledged or purged there, asked on either node', async () => {
  const [a, b] = cluster.nodes
  const onB = (args: string[]) => runCli(args, {env: b.cliEnv()})
  const ca = await a.connect()
  const cb = await b.connect()
  // the STATUS answer mq message status prints, asked on both nodes
  const status = async (id: string) => {
    const [x, y] = await Promise.all([ca.messageStatus(id), cb.messageStatus(id)])
    assert.deepEqual(x, y, 'both nodes say the same')
    return x
  }
  // for waitFor: true once both nodes give the same answer and it passes the check (a node that has not
  // yet read a new queue's definitions answers differently for a moment; that is not a failure)
  const agreed = async (id: string, ok: (x: Awaited<ReturnType<typeof ca.messageStatus>>) => boolean) => {
    const [x, y] = await Promise.all([ca.messageStatus(id), cb.messageStatus(id)])
    return isDeepStrictEqual(x, y) && ok(x)
  }
  let last = ''
  for (const dlqFirst of [true, false]) {
    const orders = dlqFirst ? 'orders' : 'orders2'
    const graveyard = dlqFirst ? 'graveyard' : 'graveyard2'
    // the dead-letter queue declared first, then created with its queue: a node looks an id up queue by
    // queue, and the answer must not depend on which one it reads first
    if (dlqFirst) await ca.declareQueue(graveyard, {durable: true})
    await ca.declareQueue(orders, {deadLetter: graveyard, durable: true})
    const ids: string[] = []
    for (const body of ['o1', 'o2', 'o3']) ids.push((await ca.publish('', orders, Buffer.from(body))).messageId)
    for (;;) {
      const d = await ca.get(orders)
      if (!d) break
      ca.reject(d.deliveryTag, 'bad-input')
    }
    // as standalone: a dead letter waiting in the dead-letter queue says dead-lettered there (a reject
    // is not confirmed: its dead-lettering lands in Redis a moment later)
    for (const id of ids) await waitFor(() => agreed(id, (x) => x?.status === 'dead-lettered'), 10_000, 100)
    for (const id of ids) assert.deepEqual(await status(id), {messageId: id, queue: graveyard, status: 'dead-lettered'})

    // redriven through node B: its dead letters are acked in graveyard after their republish to orders
    const r = await onB(['queue', 'redrive', graveyard, '--json'])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(JSON.parse(r.stdout).moved, 3)
    for (const id of ids) assert.deepEqual(await status(id), {messageId: id, queue: orders, status: 'sent'})

    // what happens to it in orders afterwards is the news: acked, dead-lettered again, purged
    const v = await b.connect()
    const d1 = await v.get(orders)
    assert.equal(d1?.messageId, ids[0])
    assert.deepEqual(await status(ids[0]), {messageId: ids[0], queue: orders, status: 'delivered'})
    await v.ackConfirmed(d1.deliveryTag)
    const d2 = await v.get(orders)
    assert.equal(d2?.messageId, ids[1])
    v.reject(d2.deliveryTag, 'bad-again')
    await v.close()
    assert.deepEqual(await status(ids[0]), {messageId: ids[0], queue: orders, status: 'acknowledged'})
    await waitFor(() => agreed(ids[1], (x) => x?.queue === graveyard), 10_000, 100)
    assert.deepEqual(await status(ids[1]), {messageId: ids[1], queue: graveyard, status: 'dead-lettered'})
    assert.equal((await ca.purgeQueue(orders)).messages, 1)
    assert.deepEqual(await status(ids[2]), {messageId: ids[2], queue: orders, status: 'purged'})
    last = ids[0]
  }
  for (const x of [ca, cb]) await x.close()
  // and as mq message status prints it
  const r = await onB(['message', 'status', last, '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout), {message_id: last, queue: 'orders2', status: 'acknowledged'})
})
