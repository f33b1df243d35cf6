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

test('mq queue unbind removes one binding: publishes with that key become unroutable, other bindings keep routing, and a restart keeps it removed', async () => {
  for (const args of [['exchange', 'declare', 'shop', '--type', 'topic'], ['queue', 'declare', 'orders'], ['queue', 'bind', 'orders', '--exchange', 'shop', '--routing-key', 'order.#'], ['queue', 'bind', 'orders', '--exchange', 'shop', '--routing-key', 'refund.*']]) {
    const r = await mq(args)
    assert.equal(r.code, 0, r.stderr)
  }
  let r = await mq(['queue', 'unbind', 'orders', 'shop', '--key', 'order.#', '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout), {exchange: 'shop', queue: 'orders', routing_key: 'order.#'})

  const c = await broker.connect()
  await assert.rejects(c.publish('shop', 'order.created', Buffer.from('x')), (e: Error & {code?: string}) => e.code === 'E_UNROUTABLE')
  assert.deepEqual((await c.publish('shop', 'refund.done', Buffer.from('y'))).queues, ['orders'])
  await c.close()

  // a binding that is not there: not found, with the keys it does have
  r = await mq(['queue', 'unbind', 'orders', 'shop', '--key', 'order.#'])
  assert.equal(r.code, 66)
  assert.match(r.stderr, /queue "orders" is not bound to exchange "shop" with key "order.#"/)
  assert.match(r.stderr, /Try this: --key "refund\.\*"/)
  r = await mq(['queue', 'unbind', 'orders', 'nope'])
  assert.equal(r.code, 66)
  assert.match(r.stderr, /exchange "nope" does not exist/)

  await broker.stop()
  await broker.restart()
  r = await mq(['exchange', 'list', '--json'])
  const keys = JSON.parse(r.stdout).bindings.filter((b: {exchange: string}) => b.exchange === 'shop').map((b: {routing_key: string}) => b.routing_key)
  assert.deepEqual(keys, ['refund.*'])
})

test('mq queue unbind needs the right to bind', async () => {
  let r = await mq(['cert', 'issue', 'dave', '--type', 'client'])
  assert.equal(r.code, 0, r.stderr)
  await mq(['exchange', 'declare', 'fan', '--type', 'fanout'])
  await mq(['queue', 'declare', 'mirror'])
  await mq(['queue', 'bind', 'mirror', '--exchange', 'fan'])
  r = await mq(['queue', 'unbind', 'mirror', 'fan', '--identity', 'dave'])
  assert.equal(r.code, 77)
  assert.match(r.stderr, /dave may not unbind mirror from fan/)
  // fanout ignores the key
  r = await mq(['queue', 'unbind', 'mirror', 'fan', '--key', 'anything'])
  assert.equal(r.code, 0, r.stderr)
})
