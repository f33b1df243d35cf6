/**
 * MQE2 grant references through a real broker and mq recv's receive loop: a reference that arrives
 * before the envelope carrying its grant waits for it instead of failing; a restarted receiver opens
 * references from the grants it stored; a reference whose grant never comes goes back to the queue
 * (temporary failure), never to the dead-letter queue.
 */
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import type {Delivery} from '../../../src/lib/wire/types.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {EnvelopeSealer, FORMAT_HEADER, IdentityResolver, MessageReceiver, OutputSink, ReplayGuard, loadOwnIdentity, receiveLoop} from '../../../src/lib/crypto/index.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'

describe('MQE2 grant references through the receive loop', () => {
  let broker: BrokerProcess
  let home: MqHome
  const mq = (args: string[]) => runCli(args, {env: broker.cliEnv()})
  const depth = async (q: string): Promise<number> => (JSON.parse((await mq(['queue', 'list', '--json'])).stdout) as {name: string; messages: number}[]).find((x) => x.name === q)?.messages ?? 0
  const lines = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as {message: string}).message)

  // no time-based repeat of the grant: a loaded machine must not turn the test's references into inline grants
  const sealerFor = () => {
    const alice = loadOwnIdentity(home, 'alice', '--from', {forSigning: true})
    const bob = loadOwnIdentity(home, 'bob', '--as')
    return new EnvelopeSealer({recipients: [{encPublicKey: bob.encPublicKey, name: 'bob'}], sender: {name: 'alice', signPrivateKey: alice.signPrivateKey}, grantEvery: 1000, grantIntervalMs: 3_600_000})
  }

  /** one receive loop as mq recv --out FILE --as bob runs it */
  const recv = async (queue: string, out: string, opts: {count?: number} = {}) => {
    const client = await broker.connect('admin')
    const me = loadOwnIdentity(home, 'bob', '--as')
    const replay = await ReplayGuard.open(home, 'bob')
    const sink = new OutputSink('none', false, out)
    const receiver = new MessageReceiver({accept: ['native'], identity: {encPrivateKey: me.encPrivateKey, name: 'bob'}, replay, resolveSender: new IdentityResolver(home, client).senderResolver()})
    const deferred: string[] = []
    try {
      const r = await receiveLoop<Delivery>(client, receiver, sink, {count: opts.count, idleTimeoutMs: 1500, onDefer: (_d, e) => deferred.push((e as {code?: string}).code ?? '?'), prefetch: 50, queue})
      return {...r, deferredCodes: deferred}
    } finally {
      sink.close()
      await replay.close()
      await client.close()
    }
  }

  const publish = async (queue: string, bodies: Buffer[]) => {
    const c = await broker.connect('admin')
    for (const b of bodies) await c.publish('', queue, b, {headers: {[FORMAT_HEADER]: 'native'}})
    await c.close()
  }

  before(async () => {
    broker = await spawnBroker()
    home = new MqHome(broker.home)
    for (const args of [['keygen', 'bob'], ['keygen', 'alice']]) assert.equal((await mq(args)).code, 0)
  })
  after(async () => {
    await broker?.cleanup()
  })

  test('references queued before their grant wait for it and are written once it arrives; a restarted receiver opens later ones from its stored grant', async () => {
    assert.equal((await mq(['queue', 'declare', 'ref.a'])).code, 0)
    const s = sealerFor()
    const [g, r1, r2] = ['with the grant', 'ref one', 'ref two'].map((t) => s.seal(Buffer.from(t)))
    assert.deepEqual([g.grantInline, r1.grantInline, r2.grantInline], [true, false, false])
    // the references reach the queue first (e.g. the first envelope was requeued behind them)
    await publish('ref.a', [r1.envelope, r2.envelope, g.envelope])
    const out = join(broker.home, 'ref-a.jsonl')
    const first = await recv('ref.a', out, {count: 3})
    assert.deepEqual({accepted: first.accepted, deferred: first.deferred, rejected: first.rejected}, {accepted: 3, deferred: 0, rejected: 0})
    assert.deepEqual(lines(out).sort(), ['ref one', 'ref two', 'with the grant'])
    // a new receiver process: the grant comes from the replay database, not from the stream
    const r3 = s.seal(Buffer.from('ref three, after a restart'))
    assert.equal(r3.grantInline, false)
    await publish('ref.a', [r3.envelope])
    const second = await recv('ref.a', out, {count: 1})
    assert.deepEqual({accepted: second.accepted, rejected: second.rejected}, {accepted: 1, rejected: 0})
    assert.equal(lines(out).at(-1), 'ref three, after a restart')
    assert.equal(await depth('ref.a'), 0)
    assert.equal(await depth('ref.a.dlq'), 0)
  })

  test('an envelope published as pieces (sealPieces) is stored and delivered as the very bytes seal() framing gives, and mq recv opens it', async () => {
    assert.equal((await mq(['queue', 'declare', 'pieces.a'])).code, 0)
    const s = sealerFor()
    // 70,000 B: two GCM pieces and bigger than BIG_BODY; 1,000 B: joined by publish and batched as usual
    const texts = ['p'.repeat(70_000), 'q'.repeat(1000), 'r'.repeat(200_000)]
    const sealed = texts.map((t) => s.sealPieces(Buffer.from(t)))
    assert.ok(sealed[0].pieces.length >= 4 && sealed[2].pieces.length >= 5)
    // both publish paths: confirmed one by one, and with batch confirms (where small bodies batch)
    for (const batchConfirms of [false, true]) {
      const c = await broker.connect('admin', {batchConfirms})
      for (const x of sealed) await c.publish('', 'pieces.a', x.pieces, {headers: {[FORMAT_HEADER]: 'native'}, messageId: x.messageId})
      for (const x of sealed) {
        const d = await c.get('pieces.a', {noAck: true})
        assert.ok(d, 'delivered')
        assert.equal(d.body.length, x.length)
        assert.ok(d.body.equals(Buffer.concat(x.pieces)), 'the broker delivers the envelope as the pieces make it')
      }
      await c.close()
    }
    const c = await broker.connect('admin')
    for (const x of sealed) await c.publish('', 'pieces.a', x.pieces, {headers: {[FORMAT_HEADER]: 'native'}, messageId: x.messageId})
    await c.close()
    const out = join(broker.home, 'pieces-a.jsonl')
    const r = await recv('pieces.a', out, {count: 3})
    assert.deepEqual({accepted: r.accepted, rejected: r.rejected}, {accepted: 3, rejected: 0})
    assert.deepEqual(lines(out), texts)
  })

  test('a reference whose grant never arrives goes back to the queue as a temporary failure, not to the dead-letter queue', async () => {
    assert.equal((await mq(['queue', 'declare', 'ref.b'])).code, 0)
    const s = sealerFor()
    s.seal(Buffer.from('its grant went elsewhere'))
    await publish('ref.b', [s.seal(Buffer.from('orphan reference')).envelope])
    const out = join(broker.home, 'ref-b.jsonl')
    const r = await recv('ref.b', out)
    assert.deepEqual({accepted: r.accepted, deferred: r.deferred, rejected: r.rejected, stoppedBy: r.stoppedBy}, {accepted: 0, deferred: 1, rejected: 0, stoppedBy: 'tempfail'})
    assert.deepEqual(r.deferredCodes, ['E_GRANT_UNKNOWN'])
    assert.equal(await depth('ref.b'), 1)
    assert.equal(await depth('ref.b.dlq'), 0)
  })
})
