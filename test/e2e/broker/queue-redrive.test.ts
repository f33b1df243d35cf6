import assert from 'node:assert/strict'
import {after, before, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'

let broker: BrokerProcess

before(async () => {
  broker = await spawnBroker()
})

after(async () => {
  await broker?.cleanup()
})

const mq = (args: string[]) => runCli(args, {env: broker.cliEnv()})
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function depth(queue: string): Promise<number> {
  const r = await mq(['queue', 'list', '--json'])
  return JSON.parse(r.stdout).find((q: {name: string}) => q.name === queue)?.messages ?? -1
}

test('mq queue redrive moves each dead letter back to the queue it died in, reports per destination, flags a possible duplicate and leaves what has no destination', async () => {
  for (const args of [['queue', 'declare', 'orders', '--dead-letter', 'graveyard'], ['queue', 'declare', 'payments', '--dead-letter', 'graveyard']]) {
    const r = await mq(args)
    assert.equal(r.code, 0, r.stderr)
  }
  const c = await broker.connect()
  const ids: Record<string, string> = {}
  for (const [q, body] of [['orders', 'o1'], ['orders', 'o2'], ['orders', 'o3'], ['payments', 'p1'], ['payments', 'p2']]) ids[body] = (await c.publish('', q, Buffer.from(body), {headers: {app: 'shop'}})).messageId
  for (const q of ['orders', 'payments']) {
    for (;;) {
      const d = await c.get(q)
      if (!d) break
      c.reject(d.deliveryTag, 'bad-input')
    }
  }
  // one dead letter put straight into the dead-letter queue: it has no death header
  const stray = (await c.publish('', 'graveyard', Buffer.from('stray'))).messageId
  await c.close()
  // an interrupted redrive: a dead letter taken and never acked comes back flagged redelivered
  const crashed = await broker.connect()
  const taken = await crashed.get('graveyard')
  assert.equal(taken?.body.toString(), 'o1')
  await crashed.close()
  await sleep(200)
  assert.equal(await depth('graveyard'), 6)

  let r = await mq(['queue', 'redrive', 'graveyard', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const rep = JSON.parse(r.stdout)
  assert.equal(rep.queue, 'graveyard')
  assert.equal(rep.moved, 5)
  assert.deepEqual(rep.by_destination, {orders: 3, payments: 2})
  assert.deepEqual(rep.possible_duplicates, [ids.o1])
  assert.equal(rep.skipped.length, 1)
  assert.equal(rep.skipped[0].message_id, stray)
  assert.match(rep.skipped[0].reason, /no x-death-queue header/)

  assert.equal(await depth('graveyard'), 1)
  assert.equal(await depth('orders'), 3)
  // the status follows the message to where it waits now, not the ack of its dead letter
  r = await mq(['message', 'status', ids.o2, '--json'])
  assert.deepEqual(JSON.parse(r.stdout), {message_id: ids.o2, queue: 'orders', status: 'sent'})
  assert.equal(await depth('payments'), 2)
  const v = await broker.connect()
  const back = await v.get('orders')
  assert.ok(back)
  assert.equal(back.body.toString(), 'o1')
  assert.equal(back.messageId, ids.o1)
  assert.equal(back.headers.app, 'shop')
  assert.equal(back.headers['x-redriven-from'], 'graveyard')
  assert.equal(back.headers['x-redriven-reason'], 'bad-input')
  assert.equal(back.headers['x-redrive-possible-duplicate'], '1')
  assert.equal(back.headers['x-death-queue'], undefined)
  v.ack(back.deliveryTag)
  const next = await v.get('orders')
  assert.equal(next?.body.toString(), 'o2')
  assert.equal(next?.headers['x-redrive-possible-duplicate'], undefined)
  v.nack(next!.deliveryTag)
  await v.close()

  // text output; the stray one is left, named on stderr
  r = await mq(['queue', 'redrive', 'graveyard'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout, 'moved 0 from graveyard\n')
  assert.match(r.stderr, new RegExp(`left in graveyard: ${stray}: no x-death-queue header`))
  // --to gives it a destination; --count bounds the run
  r = await mq(['queue', 'redrive', 'graveyard', '--to', 'payments', '--count', '1'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout, 'moved 1 from graveyard: payments 1\n')
  assert.equal(await depth('graveyard'), 0)
})

test('mq queue redrive: a dead letter whose queue is gone stays; an unknown queue is not found; consume rights are checked', async () => {
  let r = await mq(['queue', 'declare', 'temp', '--dead-letter', 'temp.dead'])
  assert.equal(r.code, 0, r.stderr)
  const c = await broker.connect()
  await c.publish('', 'temp', Buffer.from('t'))
  const d = await c.get('temp')
  c.reject(d!.deliveryTag)
  await c.close()
  r = await mq(['queue', 'delete', 'temp'])
  assert.equal(r.code, 0, r.stderr)
  r = await mq(['queue', 'redrive', 'temp.dead', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const rep = JSON.parse(r.stdout)
  assert.equal(rep.moved, 0)
  assert.match(rep.skipped[0].reason, /queue temp does not exist/)
  assert.equal(await depth('temp.dead'), 1)

  r = await mq(['queue', 'redrive', 'nope.dlq'])
  assert.equal(r.code, 66)
  assert.match(r.stderr, /queue "nope.dlq" does not exist/)
  r = await mq(['cert', 'issue', 'gina', '--type', 'client'])
  assert.equal(r.code, 0, r.stderr)
  r = await mq(['queue', 'redrive', 'temp.dead', '--identity', 'gina'])
  assert.equal(r.code, 77)
  assert.match(r.stderr, /gina may not consume from queue "temp.dead"/)
})
