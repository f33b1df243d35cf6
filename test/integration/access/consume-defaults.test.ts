/**
 * Least-privilege defaults, against a real broker process: an identity consumes only its own queues
 * (IDENTITY, IDENTITY.*) and what an explicit rule grants, publishing stays open, admin keeps
 * everything, and the pipeline's delivery queue is readable only by admins and worker.readers.
 */
import assert from 'node:assert/strict'
import {writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import type {BrokerClient} from '../../../src/lib/client/client.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {CertificateAuthority} from '../../../src/lib/pki/index.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

describe('default permissions: consume only what you own or were granted', () => {
  const t = tempHome('mq-access-')
  let broker: BrokerProcess
  let admin: BrokerClient
  const clients: BrokerClient[] = []
  const as = async (who: string) => {
    const c = await broker.connect(who)
    clients.push(c)
    return c
  }

  before(async () => {
    // an explicit rule (carol may read shared.*) and the pipeline's readers, as an operator writes them
    writeFileSync(
      join(t.dir, 'config.yaml'),
      ['broker:', '  permissions:', '    - {identity: admin, admin: true, consume: ["*"]}', '    - {identity: carol, consume: ["shared.*"]}', '    - {identity: "*"}', 'worker:', '  readers: [reader1]', ''].join('\n'),
    )
    broker = await spawnBroker({home: t.dir})
    const ca = CertificateAuthority.open(new MqHome(t.dir), defaultConfig().pki)
    for (const who of ['alice', 'bob', 'carol', 'reader1']) await ca.issue(who, {type: 'client'})
    admin = await broker.connect()
    for (const q of ['bob', 'bob.inbox', 'shared.news', 'orders']) await admin.declareQueue(q)
  })
  after(async () => {
    for (const c of [admin, ...clients]) await c?.close().catch(() => {})
    await broker?.cleanup()
    t.cleanup()
  })

  test("alice cannot read bob's queue; the refusal names the rule to add (CLI: exit 77)", async () => {
    await admin.publish('', 'bob.inbox', Buffer.from('for bob only'))
    const r = await runCli(['recv', '--queue', 'bob.inbox', '--identity', 'alice', '--accept', 'plain', '--timeout', '2s'], {env: broker.cliEnv()})
    assert.equal(r.code, 77, r.stderr)
    assert.match(r.stderr, /alice may not consume from queue "bob\.inbox"/)
    assert.match(r.stderr, /broker\.permissions: \[\{identity: alice, consume: \[bob\.inbox\]\}/)
    assert.doesNotMatch(r.stdout, /for bob only/)
    const j = await runCli(['recv', '--queue', 'bob.inbox', '--identity', 'alice', '--accept', 'plain', '--timeout', '2s', '--json'], {env: broker.cliEnv()})
    assert.equal(j.code, 77)
    assert.equal(JSON.parse(j.stdout).error.code, 'E_FORBIDDEN')
    const alice = await as('alice')
    await assert.rejects(alice.get('bob.inbox'), (e: Error & {code?: string}) => e.code === 'E_FORBIDDEN')
    await assert.rejects(alice.get('orders'), (e: Error & {code?: string}) => e.code === 'E_FORBIDDEN')
    // the message is still bob's
    const bob = await as('bob')
    assert.equal((await bob.get('bob.inbox', {noAck: true}))?.body.toString(), 'for bob only')
  })

  test('an identity consumes its own queues: NAME and NAME.* (not NAMEx)', async () => {
    const bob = await as('bob')
    await admin.publish('', 'bob', Buffer.from('b1'))
    assert.equal((await bob.get('bob', {noAck: true}))?.body.toString(), 'b1')
    // declaring a queue of its own works; someone else's namespace does not
    await bob.declareQueue('bob.tasks')
    await assert.rejects(bob.declareQueue('bobby'), (e: Error & {code?: string; hint?: string}) => e.code === 'E_FORBIDDEN' && /consume: \[bobby\]/.test(e.hint ?? ''))
  })

  test('publishing stays open: alice publishes into bob.inbox and bob reads it', async () => {
    const alice = await as('alice')
    await alice.publish('', 'bob.inbox', Buffer.from('hi bob'))
    const bob = await as('bob')
    assert.equal((await bob.get('bob.inbox', {noAck: true}))?.body.toString(), 'hi bob')
  })

  test('an explicit consume rule keeps working', async () => {
    await admin.publish('', 'shared.news', Buffer.from('news'))
    const carol = await as('carol')
    assert.equal((await carol.get('shared.news'))?.body.toString(), 'news')
    await assert.rejects(carol.get('bob.inbox'), (e: Error & {code?: string}) => e.code === 'E_FORBIDDEN')
  })

  test("the pipeline's delivery queue: only admins and worker.readers; no glob opens it", async () => {
    await admin.publish('default_exchange', 'default_key', Buffer.from('{"sender_number":"+4915200000000"}'))
    const alice = await as('alice')
    await assert.rejects(alice.get('default_queue'), (e: Error & {code?: string; hint?: string}) => e.code === 'E_FORBIDDEN' && /worker\.readers: \[reader1, alice\]/.test(e.hint ?? ''))
    const reader = await as('reader1')
    assert.match((await reader.get('default_queue'))?.body.toString() ?? '', /sender_number/)
    // admin reads everything
    await admin.publish('', 'orders', Buffer.from('o1'))
    assert.equal((await admin.get('orders'))?.body.toString(), 'o1')
  })
})
