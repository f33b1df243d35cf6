/** The definition commands in cluster mode: what one node changes, every node routes by; peek reads the stream without the group. */
import assert from 'node:assert/strict'
import {after, before, test} from 'node:test'

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

test('cluster mode: queue unbind and exchange delete on one node reach the other; both export the same definitions; peek from any node shows the head and leaves it', async () => {
  const [a, b] = cluster.nodes
  const onA = (args: string[]) => runCli(args, {env: a.cliEnv()})
  const onB = (args: string[]) => runCli(args, {env: b.cliEnv()})
  for (const args of [['exchange', 'declare', 'shop', '--type', 'topic'], ['exchange', 'declare', 'gone'], ['queue', 'declare', 'orders'], ['queue', 'bind', 'orders', '--exchange', 'shop', '--routing-key', 'order.#'], ['queue', 'bind', 'orders', '--exchange', 'shop', '--routing-key', 'refund.#']]) {
    const r = await onA(args)
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`)
  }
  let r = await onA(['queue', 'unbind', 'orders', 'shop', '--key', 'order.#'])
  assert.equal(r.code, 0, r.stderr)
  r = await onA(['exchange', 'delete', 'gone'])
  assert.equal(r.code, 0, r.stderr)
  await waitFor(async () => {
    const x = await onB(['exchange', 'list', '--json'])
    const v = JSON.parse(x.stdout)
    return !v.exchanges.some((e: {name: string}) => e.name === 'gone') && JSON.stringify(v.bindings.filter((bd: {exchange: string}) => bd.exchange === 'shop').map((bd: {routing_key: string}) => bd.routing_key)) === '["refund.#"]'
  }, 15_000, 250)
  // node B routes by the new table: the unbound key is unroutable there
  const c = await b.connect()
  await assert.rejects(c.publish('shop', 'order.created', Buffer.from('x')), (e: Error & {code?: string}) => e.code === 'E_UNROUTABLE')
  await c.close()

  const [ea, eb] = await Promise.all([onA(['definitions', 'export']), onB(['definitions', 'export'])])
  assert.equal(ea.code, 0, ea.stderr)
  assert.equal(ea.stdout, eb.stdout)

  // peek on another node than the publisher's: the head, left as it is
  const p = await a.connect()
  for (const m of ['first', 'second', 'third']) await p.publish('', 'orders', Buffer.from(m))
  await p.close()
  r = await onB(['queue', 'peek', 'orders', '--count', '2', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const v = JSON.parse(r.stdout)
  assert.deepEqual(v.messages.map((m: {text: string}) => m.text), ['first', 'second'])
  assert.equal(v.ready, 3)
  r = await onA(['queue', 'peek', 'orders', '--count', '10', '--json'])
  assert.equal(JSON.parse(r.stdout).messages.length, 3)
  const g = await b.connect()
  const d = await g.get('orders')
  assert.equal(d?.body.toString(), 'first')
  assert.equal(d?.redelivered, false)
  assert.equal(d?.deliveryCount, 1)
  r = await onA(['queue', 'peek', 'orders', '--json'])
  assert.equal(JSON.parse(r.stdout).messages[0].text, 'second', 'a message read and unacked is not ready')
  g.ack(d!.deliveryTag)
  await g.close()
})
