/**
 * The README's first send, `mq send --queue orders --to bob "hello"`, works right after the first
 * `mq broker start` without --from: the first start makes admin's end-to-end identity too.
 */
import assert from 'node:assert/strict'
import {readFileSync, statSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'

describe('first start: the admin identity can send end-to-end', () => {
  let broker: BrokerProcess
  const mq = (args: string[]) => runCli(args, {env: broker.cliEnv(), home: broker.home})

  before(async () => {
    broker = await spawnBroker({portsInConfig: true})
  })
  after(async () => {
    await broker.cleanup()
  })

  test('the first start says it made admin\'s end-to-end identity, with private keys 0600', () => {
    assert.match(broker.log(), /the "admin" end-to-end identity in .*\/keys\./)
    for (const f of ['admin.key', 'admin.sign.key']) assert.equal(statSync(join(broker.home, 'keys', f)).mode & 0o777, 0o600, f)
  })

  test('mq send --queue orders --to bob "hello" without --from, then bob reads it signed by admin', async () => {
    assert.equal((await mq(['queue', 'declare', 'orders'])).code, 0)
    assert.equal((await mq(['keygen', 'bob'])).code, 0)
    const sent = await mq(['send', '--queue', 'orders', '--to', 'bob', 'hello'])
    assert.equal(sent.code, 0, sent.stderr)
    assert.match(sent.stderr, /encrypted for bob/)
    const got = await mq(['recv', '--queue', 'orders', '--as', 'bob', '--count', '1', '--timeout', '10s', '--json'])
    assert.equal(got.code, 0, got.stderr)
    const m = JSON.parse(got.stdout)
    assert.equal(m.sender, 'admin')
    assert.equal(m.verified, true)
    assert.equal(Buffer.from(m.payload, m.encoding === 'base64' ? 'base64' : 'utf8').toString(), 'hello')
  })

  test('a restart keeps that identity (no new keys, nothing said)', async () => {
    const before = readFileSync(join(broker.home, 'keys', 'admin.crt'), 'utf8')
    await broker.stop()
    await broker.restart()
    assert.doesNotMatch(broker.log(), /Created/)
    assert.equal(readFileSync(join(broker.home, 'keys', 'admin.crt'), 'utf8'), before)
    const list = JSON.parse((await mq(['cert', 'list', '--type', 'e2e-enc', '--json'])).stdout) as {name: string; status: string}[]
    assert.deepEqual(list.filter((c) => c.name === 'admin').map((c) => c.status), ['active'])
  })
})
