import assert from 'node:assert/strict'
import {after, before, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'

let broker: BrokerProcess

before(async () => {
  broker = await spawnBroker({portsInConfig: true, extraConfig: `  permissions:\n    - {identity: admin, publish: ['*'], consume: ['*'], admin: true, monitor: true}\n    - {identity: watcher, monitor: true}\n    - {identity: '*', publish: ['*']}\n`})
})

after(async () => {
  await broker?.cleanup()
})

const mq = (args: string[]) => runCli(args, {env: {MQ_HOME: broker.home}})

test('mq queue peek shows the head of a queue and leaves it exactly as it was: a consumer then gets the same messages, not redelivered, delivered once', async () => {
  let r = await mq(['queue', 'declare', 'orders'])
  assert.equal(r.code, 0, r.stderr)
  const c = await broker.connect()
  const ids: string[] = []
  for (const body of ['first', 'second', 'third']) ids.push((await c.publish('', 'orders', Buffer.from(body), {headers: {kind: 'test'}})).messageId)
  await c.publish('', 'orders', Buffer.from([0, 1, 2, 255]))

  r = await mq(['queue', 'peek', 'orders', '--count', '2', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const v = JSON.parse(r.stdout)
  assert.equal(v.queue, 'orders')
  assert.equal(v.ready, 4)
  assert.deepEqual(v.messages.map((m: {text: string}) => m.text), ['first', 'second'])
  assert.equal(v.messages[0].message_id, ids[0])
  assert.equal(Buffer.from(v.messages[0].body, 'base64').toString(), 'first')
  assert.deepEqual(v.messages[0].headers, {kind: 'test'})
  assert.equal(v.messages[0].redelivered, false)
  assert.equal(v.messages[0].delivery_count, 0)

  // twice more, in text: same head
  r = await mq(['queue', 'peek', 'orders', '--count', '10'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, new RegExp(`--- ${ids[0]} .*kind=test\\nfirst\\n`))
  assert.match(r.stdout, /\(binary, 4 bytes, base64\) AAEC\/w==/)
  assert.equal(v.messages[1].size, 6)
  assert.match(r.stderr, /4 of 4 ready messages shown; the queue is unchanged/)

  // nothing changed: status, depth, and what a consumer sees
  r = await mq(['message', 'status', ids[0], '--json'])
  assert.equal(JSON.parse(r.stdout).status, 'sent')
  const d = await c.get('orders')
  assert.ok(d)
  assert.equal(d.body.toString(), 'first')
  assert.equal(d.redelivered, false)
  assert.equal(d.deliveryCount, 1)
  // an unacked message is not ready: peek starts after it
  r = await mq(['queue', 'peek', 'orders', '--json'])
  assert.equal(JSON.parse(r.stdout).messages[0].text, 'second')
  assert.equal(JSON.parse(r.stdout).ready, 3)
  c.ack(d.deliveryTag)
  await c.close()
})

test('mq queue peek: the monitor right is enough, a plain identity may peek only its own queues, an empty queue says so', async () => {
  for (const name of ['watcher', 'erin']) {
    const r = await mq(['cert', 'issue', name, '--type', 'client'])
    assert.equal(r.code, 0, r.stderr)
  }
  let r = await mq(['queue', 'peek', 'orders', '--identity', 'watcher', '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(JSON.parse(r.stdout).messages.length, 1)
  r = await mq(['queue', 'peek', 'orders', '--identity', 'erin'])
  assert.equal(r.code, 77)
  assert.match(r.stderr, /erin may not look at queue "orders": peeking needs the right to consume it or the monitor right/)
  r = await mq(['queue', 'declare', 'erin.inbox', '--identity', 'erin'])
  assert.equal(r.code, 0, r.stderr)
  r = await mq(['queue', 'peek', 'erin.inbox', '--identity', 'erin'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout, '')
  assert.match(r.stderr, /queue erin.inbox has no ready messages/)
  r = await mq(['queue', 'peek', 'nope'])
  assert.equal(r.code, 66)
  assert.match(r.stderr, /queue "nope" does not exist/)
})

test('mq queue peek keeps one answer within 8 MiB of bodies: fewer messages, and a bigger first body cut and marked', async () => {
  let r = await mq(['queue', 'declare', 'big'])
  assert.equal(r.code, 0, r.stderr)
  const c = await broker.connect()
  await c.publish('', 'big', Buffer.alloc(9 * 1024 * 1024, 0x61))
  await c.publish('', 'big', Buffer.from('small'))
  r = await mq(['queue', 'peek', 'big', '--count', '2', '--json'])
  assert.equal(r.code, 0, r.stderr)
  let v = JSON.parse(r.stdout)
  assert.equal(v.messages.length, 1)
  assert.equal(v.messages[0].truncated, true)
  assert.equal(v.messages[0].size, 9 * 1024 * 1024)
  assert.equal(Buffer.from(v.messages[0].body, 'base64').length, 8 * 1024 * 1024)
  r = await mq(['queue', 'purge', 'big'])
  assert.equal(r.code, 0, r.stderr)
  for (let i = 0; i < 3; i++) await c.publish('', 'big', Buffer.alloc(3 * 1024 * 1024, 0x62))
  r = await mq(['queue', 'peek', 'big', '--count', '3', '--json'])
  v = JSON.parse(r.stdout)
  assert.deepEqual(v.messages.map((m: {size: number; truncated?: boolean}) => [m.size, m.truncated ?? false]), [[3 * 1024 * 1024, false], [3 * 1024 * 1024, false]])
  assert.equal(v.ready, 3)
  await c.close()
})
