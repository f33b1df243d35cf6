/**
 * mq recv's receive loop against a real broker, with its consumer stopped at the worst moments:
 * after writing and recording but before the acks reach the broker, and after writing but before
 * recording. The redeliveries are duplicates to ack quietly, never written twice, never
 * dead-lettered as replays; a replay in a new delivery is still refused.
 */
import assert from 'node:assert/strict'
import {readFileSync, truncateSync, statSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import type {Delivery} from '../../../src/lib/wire/types.js'
import type {BrokerClient} from '../../../src/lib/client/client.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {IdentityResolver, MessageReceiver, OutputSink, ReplayGuard, loadOwnIdentity, receiveLoop} from '../../../src/lib/crypto/index.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'

describe('mq recv: a consumer stopped between writing and acking', () => {
  let broker: BrokerProcess
  let home: MqHome
  const mq = (args: string[], input?: string) => runCli(args, {env: broker.cliEnv(), input})
  const depth = async (q: string): Promise<number> => (JSON.parse((await mq(['queue', 'list', '--json'])).stdout) as {name: string; messages: number}[]).find((x) => x.name === q)!.messages
  const lines = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as {message_id: string; message: string})

  /** one receive loop run as mq recv --out FILE --as bob does it, over CLIENT (possibly sabotaged) */
  const run = async (client: BrokerClient, queue: string, out: string, opts: {count?: number; crashAfterFlush?: (file: string) => void} = {}) => {
    const me = loadOwnIdentity(home, 'bob', '--as')
    const replay = await ReplayGuard.open(home, 'bob')
    const real = new OutputSink('none', false, out)
    const sink = {
      flush: async () => {
        await real.flush()
        if (opts.crashAfterFlush) {
          opts.crashAfterFlush(out)
          throw new Error('simulated crash after the write')
        }
      },
      position: () => real.position(),
      recover: (...a: Parameters<OutputSink['recover']>) => real.recover(...a),
      write: real.write.bind(real),
    }
    const receiver = new MessageReceiver({accept: ['native'], identity: {encPrivateKey: me.encPrivateKey, name: 'bob'}, replay, resolveSender: new IdentityResolver(home, client).senderResolver()})
    try {
      return await receiveLoop<Delivery>(client, receiver, sink, {count: opts.count, idleTimeoutMs: 1500, prefetch: 50, queue})
    } finally {
      real.close()
      await replay.close()
    }
  }

  before(async () => {
    broker = await spawnBroker()
    home = new MqHome(broker.home)
    for (const args of [['keygen', 'bob'], ['keygen', 'alice']]) assert.equal((await mq(args)).code, 0)
  })
  after(async () => {
    await broker?.cleanup()
  })

  test('killed after writing and recording, before the acks: the redeliveries are acked as duplicates, not dead-lettered, not written again', async () => {
    assert.equal((await mq(['queue', 'declare', 'bob.a'])).code, 0)
    assert.equal((await mq(['send', '--queue', 'bob.a', '--from', 'alice', '--to', 'bob', '--lines'], 'm1\nm2\nm3\nm4\nm5\n')).code, 0)
    const out = join(broker.home, 'a.jsonl')
    // run 1: its acks never reach the broker (the process dies right after recording)
    const c1 = await broker.connect('admin')
    const lost = Object.assign(Object.create(c1) as BrokerClient, {ack: () => {}})
    const r1 = await run(lost, 'bob.a', out, {count: 5})
    assert.equal(r1.accepted, 5)
    await c1.close()
    // run 2: the broker hands the same 5 deliveries back, flagged redelivered
    const c2 = await broker.connect('admin')
    const r2 = await run(c2, 'bob.a', out)
    await c2.close()
    assert.deepEqual({accepted: r2.accepted, duplicates: r2.duplicates, rejected: r2.rejected}, {accepted: 0, duplicates: 5, rejected: 0})
    assert.deepEqual(lines(out).map((l) => l.message), ['m1', 'm2', 'm3', 'm4', 'm5'])
    assert.equal(await depth('bob.a'), 0)
    assert.equal(await depth('bob.a.dlq'), 0)
  })

  test('killed after writing, before recording it as written: the file shows what was written; nothing twice', async () => {
    assert.equal((await mq(['queue', 'declare', 'bob.b'])).code, 0)
    assert.equal((await mq(['send', '--queue', 'bob.b', '--from', 'alice', '--to', 'bob', '--lines'], 'n1\nn2\nn3\n')).code, 0)
    const out = join(broker.home, 'b.jsonl')
    const c1 = await broker.connect('admin')
    await assert.rejects(run(c1, 'bob.b', out, {count: 3, crashAfterFlush: () => {}}), /simulated crash/)
    await c1.close()
    assert.equal(lines(out).length, 3)
    const c2 = await broker.connect('admin')
    const r2 = await run(c2, 'bob.b', out)
    await c2.close()
    assert.deepEqual({accepted: r2.accepted, duplicates: r2.duplicates, rejected: r2.rejected}, {accepted: 0, duplicates: 3, rejected: 0})
    assert.deepEqual(lines(out).map((l) => l.message), ['n1', 'n2', 'n3'])
    assert.equal(await depth('bob.b.dlq'), 0)
  })

  test('killed mid-write (a torn last line): the torn line is cut off and that message written once, whole', async () => {
    assert.equal((await mq(['queue', 'declare', 'bob.c'])).code, 0)
    assert.equal((await mq(['send', '--queue', 'bob.c', '--from', 'alice', '--to', 'bob', '--lines'], 'p1\np2\n')).code, 0)
    const out = join(broker.home, 'c.jsonl')
    const c1 = await broker.connect('admin')
    // the crash cut the second line short
    await assert.rejects(run(c1, 'bob.c', out, {count: 2, crashAfterFlush: (f) => truncateSync(f, statSync(f).size - 10)}), /simulated crash/)
    await c1.close()
    const c2 = await broker.connect('admin')
    const r2 = await run(c2, 'bob.c', out)
    await c2.close()
    assert.deepEqual({accepted: r2.accepted, duplicates: r2.duplicates, rejected: r2.rejected}, {accepted: 1, duplicates: 1, rejected: 0})
    assert.deepEqual(lines(out).map((l) => l.message), ['p1', 'p2'])
  })

  test('a true replay (the same envelope published again: a new delivery) is still refused', async () => {
    assert.equal((await mq(['queue', 'declare', 'bob.d'])).code, 0)
    assert.equal((await mq(['send', '--queue', 'bob.d', '--from', 'alice', '--to', 'bob', 'once'])).code, 0)
    const c = await broker.connect('admin')
    const captured: Buffer[] = []
    const spy = Object.assign(Object.create(c) as BrokerClient, {
      consume: (q: string, o: {prefetch?: number}, cb: (d: Delivery) => void) => c.consume(q, o, (d) => (captured.push(d.body), cb(d))),
    })
    const out = join(broker.home, 'd.jsonl')
    assert.equal((await run(spy, 'bob.d', out, {count: 1})).accepted, 1)
    await c.publish('', 'bob.d', captured[0])
    const r = await run(c, 'bob.d', out)
    await c.close()
    assert.deepEqual({accepted: r.accepted, duplicates: r.duplicates, rejected: r.rejected}, {accepted: 0, duplicates: 0, rejected: 1})
    assert.equal(await depth('bob.d.dlq'), 1)
    assert.equal(lines(out).length, 1)
  })
})
