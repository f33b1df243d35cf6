import assert from 'node:assert/strict'
import {after, before, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {freePort} from '../../helpers/services.js'

let broker: BrokerProcess

before(async () => {
  broker = await spawnBroker()
})

after(async () => {
  await broker?.cleanup()
})

const mq = (args: string[]) => runCli(args, {env: broker.cliEnv()})

test('exchange list headers read as words (ROUTING-KEY)', async () => {
  const r = await mq(['exchange', 'list'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /^EXCHANGE\s+ROUTING-KEY\s+QUEUE$/m)
  assert.doesNotMatch(r.stdout, /ROUTINGKEY/)
})

// An empty queue table cannot be reached against a real broker (default_queue is built in and cannot be
// deleted); queue list / exchange list / stats print nothing on stdout for one, like cert list.
test('queue list and stats headers read as words too', async () => {
  let r = await mq(['queue', 'list'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /^NAME\s+DURABLE\s+MESSAGES\s+UNACKED\s+CONSUMERS\s+DEAD-LETTER$/m)
  assert.match(r.stdout, /^default_queue\s+yes/m)
  r = await mq(['stats'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /^uptime /)
  assert.match(r.stdout, /PUBLISH-RATE\s+DELIVER-RATE\s+ACK-RATE$/m)
})

test('a taken port gives one clean E_LISTEN error, no extra ERROR log line', async () => {
  const h = tempHome('mq-listen-')
  try {
    const r = await runCli(['broker', 'start', '--home', h.dir, '--port', String(broker.port), '--api-port', String(await freePort())], {timeoutMs: 90_000})
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, new RegExp(`Cannot listen on.*${broker.port}`))
    assert.doesNotMatch(r.stderr, /ERROR \[broker\.server\]/)
    assert.doesNotMatch(r.stderr, /server error/)
  } finally {
    h.cleanup()
  }
})
