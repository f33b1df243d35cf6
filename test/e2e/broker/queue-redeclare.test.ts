import assert from 'node:assert/strict'
import net from 'node:net'
import {after, before, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'

let broker: BrokerProcess

before(async () => {
  broker = await spawnBroker({ciphermq: true})
})

after(async () => {
  await broker?.cleanup()
})

const mq = (args: string[]) => runCli(args, {env: broker.cliEnv()})

test('re-declaring a queue with the same settings is idempotent', async () => {
  let r = await mq(['queue', 'declare', 'same', '--durable', '--ttl', '60s'])
  assert.equal(r.code, 0, r.stderr)
  r = await mq(['queue', 'declare', 'same', '--durable', '--ttl', '60s'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /queue same declared \(durable\)/)
})

test('re-declaring a queue with different settings fails with E_QUEUE_MISMATCH naming the existing values', async () => {
  let r = await mq(['queue', 'declare', 'orders', '--durable', '--dead-letter', 'graveyard'])
  assert.equal(r.code, 0, r.stderr)

  r = await mq(['queue', 'declare', 'orders', '--transient'])
  assert.notEqual(r.code, 0)
  assert.equal(r.stdout, '', 'nothing claims it was declared')
  assert.match(r.stderr, /queue "orders" already exists with different settings/)
  assert.match(r.stderr, /durable: existing true, requested false/)
  assert.match(r.stderr, /dead-letter: existing graveyard, requested orders\.dlq \(the default\)/)
  assert.match(r.stderr, /Try this: .*mq queue declare orders --dead-letter graveyard\).*mq queue delete orders/)

  r = await mq(['queue', 'declare', 'orders', '--durable', '--dead-letter', 'graveyard', '--max-length', '5', '--json'])
  assert.notEqual(r.code, 0)
  const err = JSON.parse(r.stdout).error
  assert.equal(err.code, 'E_QUEUE_MISMATCH')
  assert.match(err.message, /max-length: existing none, requested 5/)

  // the queue kept its settings
  r = await mq(['queue', 'list', '--json'])
  const q = JSON.parse(r.stdout).find((x: {name: string}) => x.name === 'orders')
  assert.equal(q.durable, true)
  assert.equal(q.dead_letter, 'graveyard')
})

test("a CipherMQ declare_queue (no settings) of an existing queue still answers exactly 'Queue declared'", async () => {
  const r = await mq(['queue', 'declare', 'legacy', '--durable', '--max-length', '10'])
  assert.equal(r.code, 0, r.stderr)
  const s = net.connect({host: '127.0.0.1', port: broker.ciphermqPort!})
  try {
    s.setEncoding('utf8')
    let buf = ''
    const line = new Promise<string>((resolve) =>
      s.on('data', (d: string) => {
        buf += d
        if (buf.includes('\n')) resolve(buf.slice(0, buf.indexOf('\n')))
      }),
    )
    s.write('declare_queue legacy\n')
    assert.equal(await line, 'Queue declared')
  } finally {
    s.destroy()
  }
})
