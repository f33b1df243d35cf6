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

test('mq exchange delete: --if-unused refuses while bound, plain delete removes it and its bindings, the queue stays, and it stays gone after a restart', async () => {
  for (const args of [['exchange', 'declare', 'shop', '--type', 'topic'], ['queue', 'declare', 'orders'], ['queue', 'bind', 'orders', '--exchange', 'shop', '--routing-key', 'order.#']]) {
    const r = await mq(args)
    assert.equal(r.code, 0, r.stderr)
  }
  let r = await mq(['exchange', 'delete', 'shop', '--if-unused'])
  assert.equal(r.code, 1)
  assert.match(r.stderr, /exchange "shop" still has 1 binding: not deleted \(--if-unused\)/)
  assert.match(r.stderr, /Try this:/)
  r = await mq(['exchange', 'delete', 'shop', '--if-unused', '--json'])
  assert.equal(JSON.parse(r.stdout).error.code, 'E_IN_USE')

  r = await mq(['exchange', 'delete', 'shop', '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout), {bindings: 1, exchange: 'shop'})

  r = await mq(['exchange', 'list', '--json'])
  const listed = JSON.parse(r.stdout)
  assert.ok(!listed.exchanges.some((e: {name: string}) => e.name === 'shop'))
  assert.ok(!listed.bindings.some((b: {exchange: string}) => b.exchange === 'shop'))
  r = await mq(['queue', 'list', '--json'])
  assert.ok(JSON.parse(r.stdout).some((q: {name: string}) => q.name === 'orders'), 'the bound queue stays')

  // an unused exchange goes with --if-unused; a missing one is "not found"
  await mq(['exchange', 'declare', 'empty'])
  r = await mq(['exchange', 'delete', 'empty', '--if-unused'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /exchange empty deleted \(0 bindings removed\)/)
  r = await mq(['exchange', 'delete', 'shop'])
  assert.equal(r.code, 66)
  assert.match(r.stderr, /exchange "shop" does not exist/)
  r = await mq(['exchange', 'delete', 'default_exchange'])
  assert.equal(r.code, 1)
  assert.match(r.stderr, /built in/)

  // the deletion reached broker.db: after a restart the exchange is not back
  await broker.stop()
  await broker.restart()
  r = await mq(['exchange', 'list', '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.ok(!JSON.parse(r.stdout).exchanges.some((e: {name: string}) => e.name === 'shop' || e.name === 'empty'))
})

test('mq exchange delete needs admin', async () => {
  let r = await runCli(['cert', 'issue', 'carol', '--type', 'client'], {env: broker.cliEnv()})
  assert.equal(r.code, 0, r.stderr)
  await mq(['exchange', 'declare', 'keep'])
  r = await mq(['exchange', 'delete', 'keep', '--identity', 'carol'])
  assert.equal(r.code, 77)
  assert.match(r.stderr, /carol may not delete exchanges/)
})
