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

test('first start created a development CA, the broker certificate and the admin identity, and said so', () => {
  assert.match(broker.log(), /Created a development CA, the "broker" server certificate, the "admin" client identity/)
})

test('queue and exchange administration, message status and stats through the CLI', async () => {
  let r = await mq(['exchange', 'declare', 'shop', '--type', 'topic'])
  assert.equal(r.code, 0, r.stderr)
  r = await mq(['queue', 'declare', 'orders', '--durable', '--dead-letter', 'orders.dlq', '--max-length', '1000'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /queue orders declared \(durable\)/)
  r = await mq(['queue', 'bind', 'orders', '--exchange', 'shop', '--routing-key', 'order.#'])
  assert.equal(r.code, 0, r.stderr)

  const c = await broker.connect()
  const {messageId} = await c.publish('shop', 'order.created', Buffer.from('{"id":1}'))
  await c.close()

  r = await mq(['queue', 'list', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const orders = JSON.parse(r.stdout).find((q: {name: string}) => q.name === 'orders')
  assert.equal(orders.messages, 1)
  assert.equal(orders.durable, true)
  assert.equal(orders.dead_letter, 'orders.dlq')

  r = await mq(['exchange', 'list', '--json'])
  const ex = JSON.parse(r.stdout)
  assert.ok(ex.exchanges.some((e: {name: string; type: string}) => e.name === 'shop' && e.type === 'topic'))
  assert.ok(ex.bindings.some((b: {queue: string; routing_key: string}) => b.queue === 'orders' && b.routing_key === 'order.#'))

  r = await mq(['message', 'status', messageId, '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout), {message_id: messageId, queue: 'orders', status: 'sent'})

  r = await mq(['stats', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const st = JSON.parse(r.stdout)
  assert.equal(st.totals.published, 1)
  assert.ok(st.queues.some((q: {name: string}) => q.name === 'orders'))
  assert.equal(typeof st.uptime_ms, 'number')
  r = await mq(['stats'])
  assert.match(r.stdout, /uptime .*connections/)
  assert.match(r.stdout, /orders/)

  r = await mq(['queue', 'purge', 'orders', '--json'])
  assert.equal(JSON.parse(r.stdout).messages, 1)
  r = await mq(['queue', 'delete', 'orders'])
  assert.equal(r.code, 0, r.stderr)
  r = await mq(['queue', 'list', '--json'])
  assert.ok(!JSON.parse(r.stdout).some((q: {name: string}) => q.name === 'orders'))
})

test('errors: clear message, hint and exit code', async () => {
  let r = await mq(['queue', 'delete', 'no-such-queue'])
  assert.equal(r.code, 66)
  assert.match(r.stderr, /queue "no-such-queue" does not exist/)
  assert.match(r.stderr, /Try this:/)
  r = await mq(['message', 'status', 'unknown-id', '--json'])
  assert.equal(JSON.parse(r.stdout).error.code, 'E_NOT_FOUND')
  r = await mq(['queue', 'declare', 'bad name'])
  assert.equal(r.code, 2)
  r = await runCli(['queue', 'list'], {env: {...broker.cliEnv(), MQ_BROKER: '127.0.0.1:1'}})
  assert.equal(r.code, 69)
  assert.match(r.stderr, /cannot connect to the broker/)
  r = await runCli(['queue', 'list', '--identity', 'nobody'], {env: broker.cliEnv()})
  assert.notEqual(r.code, 0)
  assert.match(r.stderr, /nobody/)
})

test('mq bench runs a producer and a consumer process and reports throughput and latency (--json)', async () => {
  const r = await mq(['bench', '--messages', '300', '--window', '50', '--latency-rate', '0', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const out = JSON.parse(r.stdout)
  assert.deepEqual(
    out.results.map((x: {mode: string}) => x.mode),
    ['memory', 'durable'],
  )
  for (const x of out.results) {
    assert.equal(x.messages, 300)
    assert.ok(x.msgs_per_sec > 0)
    assert.ok(x.latency_ms.p99 >= x.latency_ms.p50)
    // each client's CPU per message, measured in its own process
    assert.ok(x.consumer_cpu_us > 0 && x.producer_cpu_us > 0, JSON.stringify(x))
  }
  assert.ok(out.results[1].confirm_ms.p99 > 0)
})
