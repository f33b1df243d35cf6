import assert from 'node:assert/strict'
import {after, before, test} from 'node:test'

import {ClusterEngine} from '../../../src/lib/broker/cluster/engine.js'
import type {DeliveryOut, Session} from '../../../src/lib/broker/engine.js'
import {MqError} from '../../../src/lib/errors.js'
import {Logger} from '../../../src/lib/log.js'
import {privateRedis} from '../../helpers/pipeline.js'
import {uniqueName, waitFor} from '../../helpers/services.js'

// two nodes of one cluster in this process, on a private redis-server with AOF
let redis: Awaited<ReturnType<typeof privateRedis>>
const engines: ClusterEngine[] = []
const logs: string[] = []
const logger = new Logger('info', 'test', (line) => void logs.push(line))

async function node(name: string, over: Partial<Parameters<typeof ClusterEngine.connect>[0]> = {}): Promise<ClusterEngine> {
  const e = await ClusterEngine.connect({claimMs: 1000, deliveryLimit: 3, durability: 'fsync', logger, name, url: redis.url, ...over})
  e.start()
  engines.push(e)
  return e
}

function session(e: ClusterEngine): {s: Session; got: DeliveryOut[]} {
  const got: DeliveryOut[] = []
  const s = e.openSession('t', {deliver: (d) => void got.push(d), writable: () => true})
  return {got, s}
}

const committed = (e: ClusterEngine) => new Promise<void>((resolve, reject) => e.store.afterCommit((err) => (err ? reject(err) : resolve())))

before(async () => {
  redis = await privateRedis()
})

after(async () => {
  for (const e of engines) await e.close()
  await redis.destroy()
})

test('nack requeues with the delivery count kept (redelivered, on another node), dead-lettered at the delivery limit', async () => {
  const name = uniqueName('c')
  const a = await node(name)
  const b = await node(name)
  a.declareQueue('jobs', {deadLetter: 'jobs.dlq', durable: true})
  await committed(a)
  a.publish('', 'jobs', Buffer.from('j1'), {messageId: 'j1'})
  await committed(a)
  await waitFor(() => b.queues.has('jobs'))
  const sa = session(a)
  const sb = session(b)
  let d: DeliveryOut | null | undefined = await a.get(sa.s, 'jobs')
  assert.equal(d?.msg.deliveryCount, 1)
  assert.equal(d?.msg.redelivered, false)
  a.nack(sa.s, d!.deliveryTag, true)
  await committed(a)
  d = await b.get(sb.s, 'jobs')
  assert.equal(d?.msg.messageId, 'j1')
  assert.equal(d?.msg.deliveryCount, 2, 'the count travels with the message')
  assert.equal(d?.msg.redelivered, true)
  b.nack(sb.s, d!.deliveryTag, true)
  await committed(b)
  d = await a.get(sa.s, 'jobs')
  assert.equal(d?.msg.deliveryCount, 3)
  a.nack(sa.s, d!.deliveryTag, true)
  await committed(a)
  await waitFor(async () => (await b.get(sb.s, 'jobs.dlq', {noAck: true}).then((x) => (d = x ?? undefined))) !== undefined, 5000)
  assert.equal(d?.msg.messageId, 'j1')
  assert.equal(d?.msg.headers['x-death-reason'], 'delivery-limit')
  assert.equal(d?.msg.headers['x-death-count'], '3')
  assert.equal(await b.get(sb.s, 'jobs'), null, 'gone from the queue')
})

test('reject dead-letters; TTL expires; max-length drops the oldest; status and dedupe are cluster-wide', async () => {
  const name = uniqueName('c')
  const a = await node(name)
  const b = await node(name)
  a.declareQueue('r', {deadLetter: 'r.dlq', durable: true})
  a.declareQueue('t', {deadLetter: 't.dlq', durable: true, ttlMs: 300})
  a.declareQueue('m', {durable: true, maxLength: 2})
  await committed(a)
  await waitFor(() => b.queues.has('m'))
  const sb = session(b)
  b.publish('', 'r', Buffer.from('r1'), {messageId: 'r1'})
  await committed(b)
  const d = await b.get(sb.s, 'r')
  b.reject(sb.s, d!.deliveryTag, 'bad input')
  await committed(b)
  const dl = await a.get(session(a).s, 'r.dlq', {noAck: true})
  assert.equal(dl?.msg.headers['x-death-reason'], 'bad input')
  assert.deepEqual(await a.messageStatus('r1'), {messageId: 'r1', queue: 'r.dlq', status: 'acknowledged'})

  a.publish('', 't', Buffer.from('t1'), {messageId: 't1'})
  await committed(a)
  // nobody consumes: the sweep of either node moves it once it is older than the TTL
  await waitFor(async () => (await b.messageStatus('t1'))?.queue === 't.dlq', 5000)
  const t = await b.get(sb.s, 't.dlq', {noAck: true})
  assert.equal(t?.msg.headers['x-death-reason'], 'expired')

  for (const id of ['m1', 'm2', 'm3']) a.publish('', 'm', Buffer.from(id), {messageId: id})
  await committed(a)
  await waitFor(async () => (await b.messageStatus('m1'))?.status === 'dropped', 5000)
  const left = [(await b.get(sb.s, 'm', {noAck: true}))?.msg.messageId, (await b.get(sb.s, 'm', {noAck: true}))?.msg.messageId, await b.get(sb.s, 'm', {noAck: true})]
  assert.deepEqual(left, ['m2', 'm3', null])

  // a deduplicated publish repeated on another node is recognised there
  a.declareQueue('d', {durable: true})
  await committed(a)
  await waitFor(() => b.queues.has('d'))
  const r1 = a.publish('', 'd', Buffer.from('x'), {dedupe: true, messageId: 'dup-1'})
  await committed(a)
  const r2 = b.publish('', 'd', Buffer.from('x'), {dedupe: true, messageId: 'dup-1'})
  await committed(b)
  assert.equal(r1.duplicate, undefined)
  assert.equal(r2.duplicate, true)
  b.settlePublished('dup-1')
  await new Promise((r) => setTimeout(r, 100))
  const r3 = b.publish('', 'd', Buffer.from('x'), {dedupe: true, messageId: 'dup-1'})
  await committed(b)
  assert.equal(r3.duplicate, undefined, 'settled: remembered no more')
})

test('prefetch bounds what a consumer holds; acks free the window', async () => {
  const name = uniqueName('c')
  const a = await node(name)
  a.declareQueue('p', {durable: true})
  for (let i = 0; i < 20; i++) a.publish('', 'p', Buffer.from(`p${i}`), {messageId: `p${i}`})
  await committed(a)
  const sa = session(a)
  a.consume(sa.s, 'p', {prefetch: 5})
  await waitFor(() => sa.got.length === 5)
  await new Promise((r) => setTimeout(r, 300))
  assert.equal(sa.got.length, 5, 'no more than the prefetch')
  for (const d of sa.got.slice(0, 3)) a.ack(sa.s, d.deliveryTag)
  await waitFor(() => sa.got.length === 8)
  assert.deepEqual(sa.got.map((d) => d.msg.messageId), Array.from({length: 8}, (_, i) => `p${i}`), 'in order')
})

test('a Redis without appendfsync always is reported at start', async () => {
  logs.length = 0
  const other = await privateRedis()
  try {
    const {Redis} = await import('ioredis')
    const r = new Redis(other.url)
    await r.config('SET', 'appendfsync', 'everysec')
    r.disconnect()
    const e = await ClusterEngine.connect({claimMs: 1000, durability: 'fsync', logger, name: 'x', url: other.url})
    await e.close()
    assert.match(logs.join('\n'), /cluster durability: Redis fsyncs its append-only file "everysec", not "always"/)
    assert.equal(e.clusterStatus().durability.promised, false)
  } finally {
    await other.destroy()
  }
})

test('Redis restarted (AOF): the nodes reconnect and every confirmed message is still there', async () => {
  const name = uniqueName('c')
  const a = await node(name)
  const b = await node(name)
  a.declareQueue('keep', {durable: true})
  await committed(a)
  for (let i = 0; i < 200; i++) a.publish('', 'keep', Buffer.from(`k${i}`), {messageId: `k${i}`})
  await committed(a)
  await redis.kill()
  await redis.start()
  // publishes made once Redis is back are confirmed too (the nodes reconnect on their own)
  await waitFor(async () => {
    try {
      b.publish('', 'keep', Buffer.from('after'), {messageId: 'after'})
      await committed(b)
      return true
    } catch {
      return false
    }
  }, 15_000, 200)
  await waitFor(() => b.queues.has('keep'))
  const sb = session(b)
  b.consume(sb.s, 'keep', {noAck: true, prefetch: 100})
  await waitFor(() => sb.got.length >= 201, 15_000)
  const ids = new Set(sb.got.map((d) => d.msg.messageId))
  assert.equal(ids.size, 201)
  assert.ok(ids.has('k0') && ids.has('k199') && ids.has('after'))
})

test('the publishes and acks of one turn reach Redis as one script run per queue: in order, a repeated id in the same turn is a duplicate', async () => {
  const name = uniqueName('c')
  const a = await node(name)
  a.declareQueue('turn', {durable: true})
  await committed(a)
  const {Redis} = await import('ioredis')
  const r = new Redis(redis.url)
  // script runs so far, every node of this file (heartbeats, sweeps) included
  const calls = async (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(await r.info('commandstats'))?.[1] ?? 0)
  const scriptRuns = () => calls('evalsha')
  try {
    let before = await scriptRuns()
    const hsets = await calls('hset')
    for (let i = 0; i < 300; i++) a.publish('', 'turn', Buffer.from(`t${i}`), {messageId: `t${i}`})
    const first = a.publish('', 'turn', Buffer.from('once'), {dedupe: true, messageId: 'same'})
    const again = a.publish('', 'turn', Buffer.from('twice'), {dedupe: true, messageId: 'same'})
    await committed(a)
    // one run for the 301 stored messages; the rest are the housekeeping of the nodes meanwhile
    // the housekeeping of this file's other nodes (heartbeats, claim sweeps) runs scripts meanwhile: on a
    // loaded machine a few dozen; one run per message would be 301
    assert.ok((await scriptRuns()) - before < 100, 'one script run per queue and turn, not one per message')
    // inside the script too: the id index is written once for the batch (heartbeats write hashes meanwhile)
    assert.ok((await calls('hset')) - hsets < 60, 'one HSET of the id index per batch')
    assert.equal(first.duplicate, undefined)
    assert.equal(again.duplicate, true, 'the second publish of the same id in the same turn is recognised')

    const sa = session(a)
    a.consume(sa.s, 'turn', {prefetch: 1000})
    await waitFor(() => sa.got.length === 301)
    assert.deepEqual(sa.got.map((d) => d.msg.messageId), [...Array.from({length: 300}, (_, i) => `t${i}`), 'same'], 'in publish order')
    assert.equal(sa.got[300].msg.body.toString(), 'once')
    before = await scriptRuns()
    const xacks = await calls('xack')
    for (const d of sa.got) a.ack(sa.s, d.deliveryTag)
    await committed(a)
    assert.ok((await scriptRuns()) - before < 100, 'one settle run for the acks of one turn')
    assert.ok((await calls('xack')) - xacks < 20, 'one XACK for the batch')
    assert.deepEqual(await a.messageStatus('t299'), {messageId: 't299', queue: 'turn', status: 'acknowledged'})
    assert.equal((await a.listQueues()).find((q) => q.name === 'turn')?.acked, 301)
  } finally {
    r.disconnect()
  }
})

test('settled statuses are remembered up to status capacity when a whole batch is settled at once', async () => {
  const name = uniqueName('c')
  const a = await node(name, {statusCapacity: 5})
  a.declareQueue('cap', {durable: true})
  await committed(a)
  for (let i = 0; i < 20; i++) a.publish('', 'cap', Buffer.from(`c${i}`), {messageId: `c${i}`})
  await committed(a)
  const sa = session(a)
  a.consume(sa.s, 'cap', {prefetch: 100})
  await waitFor(() => sa.got.length === 20)
  // one turn: the twenty acks go as one batch, and the oldest fifteen statuses are forgotten
  for (const d of sa.got) a.ack(sa.s, d.deliveryTag)
  await committed(a)
  assert.equal(await a.messageStatus('c14'), null)
  assert.deepEqual(await a.messageStatus('c15'), {messageId: 'c15', queue: 'cap', status: 'acknowledged'})
  assert.deepEqual(await a.messageStatus('c19'), {messageId: 'c19', queue: 'cap', status: 'acknowledged'})
  // a tag acked twice is refused by the session; the batch above counted each message once
  assert.equal((await a.listQueues()).find((q) => q.name === 'cap')?.acked, 20)
})

test('a node with consumers of the queue it publishes to delivers from the publish run: bodies not read back from Redis, order and counts kept', async () => {
  const name = uniqueName('c')
  const a = await node(name)
  const b = await node(name)
  a.declareQueue('near', {durable: true})
  await committed(a)
  const sa = session(a)
  a.consume(sa.s, 'near', {prefetch: 1000})
  const {Redis} = await import('ioredis')
  const r = new Redis(redis.url)
  const sent = async () => Number(/total_net_output_bytes:(\d+)/.exec(await r.info('stats'))?.[1] ?? 0)
  try {
    const body = (i: number) => Buffer.alloc(4096, `n${i}.`)
    // the first run wakes the queue's blocking read; the runs after it go while A keeps publishing
    a.publish('', 'near', body(0), {messageId: 'n0'})
    await committed(a)
    const before = await sent()
    let i = 1
    for (let turn = 0; turn < 20; turn++) {
      for (let k = 0; k < 10; k++, i++) a.publish('', 'near', body(i), {messageId: `n${i}`})
      await committed(a)
    }
    // a message published on another node meanwhile reaches A's consumer too (read by A's publish run or its read loop)
    b.publish('', 'near', Buffer.from('from b'), {messageId: 'b0'})
    await committed(a)
    await committed(b)
    await waitFor(() => sa.got.length === 202)
    const out = (await sent()) - before
    // one read back per message would be 200 * 4 KB and more; a run that found the blocking read out (the
    // first, or one after a pause of this process on a loaded machine) still reads its messages back
    assert.ok(out < 200 * 4096 * 0.5, `Redis sent ${out} bytes for 200 messages of 4 KB published and consumed on one node: most not read back`)
    const ids = sa.got.map((d) => d.msg.messageId).filter((x) => x !== 'b0')
    assert.deepEqual(ids, Array.from({length: 201}, (_, j) => `n${j}`), 'in publish order, each once')
    for (const d of sa.got) {
      assert.equal(d.msg.deliveryCount, 1)
      assert.equal(d.msg.redelivered, false)
      if (d.msg.messageId !== 'b0') assert.deepEqual(d.msg.body, body(Number(d.msg.messageId.slice(1))))
    }
    assert.equal(sa.got.find((d) => d.msg.messageId === 'b0')?.msg.body.toString(), 'from b')
    for (const d of sa.got) a.ack(sa.s, d.deliveryTag)
    await committed(a)
    assert.deepEqual(await b.messageStatus('n150'), {messageId: 'n150', queue: 'near', status: 'acknowledged'})
    // queue depths are refreshed every second
    await waitFor(async () => (await b.listQueues()).find((q) => q.name === 'near')?.unacked === 0, 5000)
  } finally {
    r.disconnect()
  }
})

test('entries of the older layout (one stream field per property, already in Redis) are delivered, requeued, dead-lettered, expired, purged and reported; new ones are one packed field', async () => {
  const name = uniqueName('c')
  const a = await node(name)
  a.declareQueue('old', {deadLetter: 'old.dlq', durable: true})
  a.declareQueue('oldttl', {deadLetter: 'oldttl.dlq', durable: true, ttlMs: 60_000})
  a.declareQueue('oldpurge', {durable: true})
  await committed(a)
  const {Redis} = await import('ioredis')
  const r = new Redis(redis.url)
  try {
    // what the previous version's publish script wrote: the entry and the id index
    const k = (q: string) => ({ids: `{mq:${name}:q:${q}}:ids`, stream: `{mq:${name}:q:${q}}:s`})
    const writeOld = async (q: string, id: string, fields: string[]) => {
      const sid = (await r.xadd(k(q).stream, '*', 'm', id, 'e', '', 'k', q, 't', String(Date.now()), 'b', `body of ${id}`, ...fields))!
      await r.hset(k(q).ids, id, sid)
    }
    await writeOld('old', 'o1', ['h', JSON.stringify({'x-app': 'v1'})])
    await writeOld('old', 'o2', [])
    // a dead letter the older version wrote: status says so while it waits
    await writeOld('old.dlq', 'o3', ['h', JSON.stringify({'x-death-queue': 'old', 'x-death-reason': 'rejected'})])
    assert.deepEqual(await a.messageStatus('o1'), {messageId: 'o1', queue: 'old', status: 'sent'})
    assert.deepEqual(await a.messageStatus('o3'), {messageId: 'o3', queue: 'old.dlq', status: 'dead-lettered'})
    const peeked = await a.peek('old', 10)
    assert.deepEqual(peeked.messages.map((m) => m.messageId), ['o1', 'o2'])

    const sa = session(a)
    let d = await a.get(sa.s, 'old')
    assert.equal(d?.msg.messageId, 'o1')
    assert.equal(d?.msg.body.toString(), 'body of o1')
    assert.equal(d?.msg.routingKey, 'old')
    assert.deepEqual(d?.msg.headers, {'x-app': 'v1'})
    assert.equal(d?.msg.deliveryCount, 1)
    // requeued (the move script finds the id in field m): the count kept, the id index follows it
    a.nack(sa.s, d!.deliveryTag, true)
    await committed(a)
    d = await a.get(sa.s, 'old')
    assert.equal(d?.msg.messageId, 'o2')
    a.ack(sa.s, d!.deliveryTag)
    await committed(a)
    assert.deepEqual(await a.messageStatus('o2'), {messageId: 'o2', queue: 'old', status: 'acknowledged'})
    d = await a.get(sa.s, 'old')
    assert.equal(d?.msg.messageId, 'o1')
    assert.equal(d?.msg.deliveryCount, 2)
    assert.equal(d?.msg.redelivered, true)
    assert.deepEqual(await a.messageStatus('o1'), {messageId: 'o1', queue: 'old', status: 'delivered'})
    // dead-lettered: the copy in the dead-letter queue is written in the packed layout
    a.reject(sa.s, d!.deliveryTag, 'bad')
    await committed(a)
    await waitFor(async () => (await a.messageStatus('o1'))?.queue === 'old.dlq', 5000)
    const dead = (await (r as unknown as {xrangeBuffer: (...x: unknown[]) => Promise<[Buffer, Buffer[]][]>}).xrangeBuffer(k('old.dlq').stream, '-', '+')).at(-1)!
    assert.deepEqual(dead[1].filter((_, i) => i % 2 === 0).map(String), ['p'], 'one packed field')
    const dl1 = await a.get(sa.s, 'old.dlq', {noAck: true})
    assert.equal(dl1?.msg.messageId, 'o3')
    const dl2 = await a.get(sa.s, 'old.dlq', {noAck: true})
    assert.equal(dl2?.msg.messageId, 'o1')
    assert.equal(dl2?.msg.body.toString(), 'body of o1')
    assert.deepEqual(dl2?.msg.headers, {'x-app': 'v1', 'x-death-count': '2', 'x-death-queue': 'old', 'x-death-reason': 'bad'})

    // an old entry whose expiry (field x) has passed is expired by the sweep
    await writeOld('oldttl', 'o4', ['x', String(Date.now() - 1)])
    await waitFor(async () => (await a.messageStatus('o4'))?.queue === 'oldttl.dlq', 5000)
    assert.equal((await a.get(sa.s, 'oldttl.dlq', {noAck: true}))?.msg.headers['x-death-reason'], 'expired')
    // new entries in a queue with a TTL: the packed field and the expiry the script computed
    a.publish('', 'oldttl', Buffer.from('n1'), {messageId: 'n1'})
    await committed(a)
    const fresh = (await (r as unknown as {xrangeBuffer: (...x: unknown[]) => Promise<[Buffer, Buffer[]][]>}).xrangeBuffer(k('oldttl').stream, '-', '+')).at(-1)!
    const names = fresh[1].filter((_, i) => i % 2 === 0).map(String)
    assert.deepEqual(names, ['p', 'x'])
    const ts = fresh[1][1].readDoubleBE(1)
    assert.equal(Number(fresh[1][3].toString()), ts + 60_000)
    const n1 = await a.get(sa.s, 'oldttl', {noAck: true})
    assert.equal(n1?.msg.expiresAt, ts + 60_000)

    // purge settles old entries with their ids (status purged)
    await writeOld('oldpurge', 'o5', [])
    assert.equal(await a.purgeQueue('oldpurge'), 1)
    assert.deepEqual(await a.messageStatus('o5'), {messageId: 'o5', queue: 'oldpurge', status: 'purged'})
  } finally {
    r.disconnect()
  }
})

test('one settle batch with entries claimed by another consumer in the middle of its range: only the ones still held are acked', async () => {
  const name = uniqueName('c')
  const a = await node(name)
  a.declareQueue('mix', {durable: true})
  for (let i = 0; i < 6; i++) a.publish('', 'mix', Buffer.from(`x${i}`), {messageId: `x${i}`})
  await committed(a)
  const sa = session(a)
  const got: DeliveryOut[] = []
  for (let i = 0; i < 6; i++) got.push((await a.get(sa.s, 'mix'))!)
  const {Redis} = await import('ioredis')
  const r = new Redis(redis.url)
  try {
    const stream = `{mq:${name}:q:mix}:s`
    const pending = async () => ((await r.xpending(stream, 'g', '-', '+', 100)) as [string, string][]).map(([sid, who]) => [sid, who])
    const before = await pending()
    // another node claimed x1 and x4 meanwhile (as the dead-node sweep does)
    await r.xclaim(stream, 'g', 'elsewhere.1', 0, before[1][0], before[4][0], 'JUSTID')
    const fenced = a.counters.fencedSettles
    for (const d of got) a.ack(sa.s, d.deliveryTag)
    await committed(a)
    assert.equal(a.counters.fencedSettles - fenced, 2, 'the two claimed elsewhere are refused')
    assert.deepEqual(await pending(), [before[1][0], before[4][0]].map((sid) => [sid, 'elsewhere.1']), 'still pending for the claimer')
    assert.equal((await a.listQueues()).find((q) => q.name === 'mix')?.acked, 4)
    assert.deepEqual(await a.messageStatus('x1'), {messageId: 'x1', queue: 'mix', status: 'delivered'})
    assert.deepEqual(await a.messageStatus('x5'), {messageId: 'x5', queue: 'mix', status: 'acknowledged'})
  } finally {
    r.disconnect()
  }
})

test('a node does not join a cluster while a node of a version before the packed layout is alive (it would deliver the new entries empty)', async () => {
  const name = uniqueName('c')
  const a = await node(name)
  const {Redis} = await import('ioredis')
  const r = new Redis(redis.url)
  try {
    // what an older node's heartbeat leaves: a fresh stamp, and node info without `layout`
    const [sec, usec] = (await r.time()) as [number, number]
    await r.hset(`{mq:${name}}:hb`, 'oldhost-1-abcd.1', String(Number(sec) * 1000 + Math.floor(Number(usec) / 1000)))
    await r.hset(`{mq:${name}}:nodes`, 'oldhost-1-abcd.1', JSON.stringify({epoch: 1, node: 'oldhost-1-abcd'}))
    await assert.rejects(node(name), (e: unknown) => e instanceof MqError && e.code === 'E_CLUSTER_VERSION' && /oldhost-1-abcd/.test(e.message))
    // the upgraded node already running says which layout it writes
    assert.equal(a.clusterStatus().nodes.find((n) => n.self)?.info.layout, 1)
    // once the older node is gone (stopped: its heartbeat removed), the new one joins
    await r.hdel(`{mq:${name}}:hb`, 'oldhost-1-abcd.1')
    const b = await node(name)
    assert.ok(b.clusterStatus().nodes.length >= 2)
  } finally {
    r.disconnect()
  }
})
