import assert from 'node:assert/strict'
import {after, before, test} from 'node:test'

import {Redis} from 'ioredis'

import {ClusterKeys} from '../../../src/lib/broker/cluster/keys.js'
import type {BrokerClient} from '../../../src/lib/client/client.js'
import type {Delivery} from '../../../src/lib/wire/types.js'
import {type TestCluster, startCluster} from '../../helpers/cluster.js'
import {waitFor} from '../../helpers/services.js'

// three brokers on a private redis-server with AOF; claim_ms 2 s. The pause is shorter than the
// issue's 30 s in npm test (MQ_TEST_CLUSTER_PAUSE_MS sets it), and so is the kill -9 run
// (MQ_TEST_CLUSTER_MESSAGES; scripts/cluster-chaos.sh runs 20,000).
const CLAIM_MS = 2000
const PAUSE_MS = Number(process.env.MQ_TEST_CLUSTER_PAUSE_MS ?? 5000)
const MESSAGES = Number(process.env.MQ_TEST_CLUSTER_MESSAGES ?? 2000)

let cluster: TestCluster
let redis: Redis

before(async () => {
  cluster = await startCluster(3, {claimMs: CLAIM_MS})
  redis = new Redis(cluster.redis.url)
})

after(async () => {
  redis?.disconnect()
  await cluster?.cleanup()
})

/** Every delivery of a consumer, by message id, in arrival order (one test process sees both consumers). */
class Ledger {
  readonly deliveries: {id: string; redelivered: boolean; at: number; by: string}[] = []
  add(d: Delivery, by: string): void {
    this.deliveries.push({at: Date.now(), by, id: d.messageId, redelivered: d.redelivered})
  }
  ids(): Set<string> {
    return new Set(this.deliveries.map((d) => d.id))
  }
  /** deliveries of an id already delivered that are not flagged redelivered */
  unflaggedDuplicates(): string[] {
    const seen = new Set<string>()
    const bad: string[] = []
    for (const d of this.deliveries) {
      if (seen.has(d.id) && !d.redelivered) bad.push(d.id)
      seen.add(d.id)
    }
    return bad
  }
  duplicates(): number {
    return this.deliveries.length - this.ids().size
  }
}

async function publishAll(pub: BrokerClient, queue: string, n: number, prefix: string, onConfirmed?: (count: number) => void): Promise<{sent: number; confirmed: Set<string>}> {
  const confirmed = new Set<string>()
  const inflight = new Set<Promise<void>>()
  let sent = 0
  for (let i = 0; i < n; i++) {
    const id = `${prefix}${i}`
    sent++
    const p = pub.publish('', queue, Buffer.from(`body-${id}`), {messageId: id}).then(() => {
      confirmed.add(id)
      onConfirmed?.(confirmed.size)
    })
    inflight.add(p)
    p.finally(() => inflight.delete(p)).catch(() => {})
    if (inflight.size >= 100) await Promise.race(inflight)
  }
  await Promise.allSettled([...inflight])
  return {confirmed, sent}
}

test(`SIGSTOP a node that holds unacked messages for ${PAUSE_MS} ms, then SIGCONT: its messages are redelivered elsewhere, nothing is acked twice or lost`, async () => {
  const [a, b, c] = cluster.nodes
  const admin = await a.connect()
  await admin.declareQueue('paused', {durable: true})
  const ledger = new Ledger()
  // the consumer on C holds what it gets until C is resumed, then acks it all: late acks
  const onC = await c.connect()
  onC.on('error', () => {})
  const held: number[] = []
  let resumed = false
  const ackOnC = (tag: number) => {
    try {
      onC.ack(tag)
    } catch {}
  }
  await onC.consume('paused', {prefetch: 20}, (d) => {
    ledger.add(d, 'C')
    if (resumed) ackOnC(d.deliveryTag)
    else held.push(d.deliveryTag)
  })
  const onB = await b.connect()
  await onB.consume('paused', {prefetch: 20}, (d) => {
    ledger.add(d, 'B')
    setTimeout(() => onB.ack(d.deliveryTag), 20)
  })
  const n = 400
  const {confirmed} = await publishAll(admin, 'paused', n, 'p')
  assert.equal(confirmed.size, n)
  await waitFor(() => held.length >= 20, 10_000)
  c.proc.kill('SIGSTOP')
  const stoppedAt = Date.now()
  await new Promise((r) => setTimeout(r, PAUSE_MS))
  c.proc.kill('SIGCONT')
  resumed = true
  for (const tag of held.splice(0)) ackOnC(tag)
  await waitFor(() => ledger.ids().size === n, 30_000)
  // what C still had was claimed while it slept and went to B, flagged
  const redeliveredOnB = ledger.deliveries.filter((d) => d.by === 'B' && d.redelivered && d.at > stoppedAt)
  assert.ok(redeliveredOnB.length > 0, 'C held unacked messages when it stopped, and B redelivered them')
  assert.deepEqual(ledger.unflaggedDuplicates(), [], 'a second delivery of a message is always flagged redelivered')
  const keys = new ClusterKeys(cluster.name).queue('paused')
  // the queue's settle ledger in Redis: each message acknowledged exactly once
  await waitFor(async () => (await redis.llen(keys.doneLog)) >= n, 15_000)
  await new Promise((r) => setTimeout(r, 1000))
  const done = await redis.lrange(keys.doneLog, 0, -1)
  assert.equal(done.length, n, 'no message acknowledged twice')
  assert.equal(new Set(done).size, n)
  assert.equal(await redis.xlen(keys.stream), 0, 'nothing left behind')
  // C noticed: it rejoined under a new epoch and its late acks were refused
  const st = await (await c.connect()).stats()
  assert.ok((st.cluster?.fences ?? 0) >= 1, 'C started a new epoch after the pause')
  assert.ok((st.cluster?.fencedSettles ?? 0) >= 1, 'C refused acks of messages claimed elsewhere')
  assert.match(c.log(), /cluster lease lost/)
  for (const x of [admin, onB, onC]) await x.close().catch(() => {})
})

test(`kill -9 of the node holding consumers during ${MESSAGES} confirmed publishes: lost 0, unacked redelivered elsewhere within claim_ms + 2 s`, async () => {
  const [a, b, c] = cluster.nodes
  const admin = await a.connect()
  await admin.declareQueue('crash', {durable: true})
  const ledger = new Ledger()
  const onC = await c.connect()
  onC.on('error', () => {})
  await onC.consume('crash', {prefetch: 50}, (d) => {
    ledger.add(d, 'C')
    // C is slow on purpose so that it always holds a full prefetch unacked when it is killed
    setTimeout(() => {
      try {
        onC.ack(d.deliveryTag)
      } catch {}
    }, 250)
  })
  const pub = await a.connect('admin', {batchConfirms: true})
  let killedAt = 0
  let bStarted: Promise<void> | undefined
  let onB: BrokerClient | undefined
  const startB = async () => {
    onB = await b.connect()
    await onB.consume('crash', {prefetch: 50}, (d) => {
      ledger.add(d, 'B')
      onB!.ack(d.deliveryTag)
    })
  }
  const {confirmed, sent} = await publishAll(pub, 'crash', MESSAGES, 'k', (count) => {
    if (count === Math.floor(MESSAGES / 2) && killedAt === 0) {
      killedAt = Date.now()
      bStarted = c.kill9().then(startB)
    }
  })
  assert.ok(killedAt > 0, 'the kill happened during the publishes')
  // B's consumer is part of the setup: if it could not start, that is the failure to report
  await bStarted
  // the ledger is printed even when something is missing
  // C's unacked deliveries are already in the ledger, so wait for B's redelivery of them as well
  const redeliveredByB = () => ledger.deliveries.some((d) => d.by === 'B' && d.redelivered)
  // one set per poll: rebuilding it per confirmed id starved this process (and B's consumer in it) at 20,000
  const allReceived = () => {
    const ids = ledger.ids()
    return [...confirmed].every((id) => ids.has(id))
  }
  await waitFor(() => allReceived() && redeliveredByB(), 60_000).catch(() => {})
  const received = ledger.ids()
  const lost = [...confirmed].filter((id) => !received.has(id))
  const firstRedelivery = ledger.deliveries.find((d) => d.by === 'B' && d.redelivered)
  const byNode = (n: string) => ledger.deliveries.filter((d) => d.by === n).length
  const ledgerLine = {confirmed: confirmed.size, delivered_by_b: byNode('B'), delivered_by_c: byNode('C'), duplicated: ledger.duplicates(), lost: lost.length, received: received.size, redelivered_after_ms: firstRedelivery ? firstRedelivery.at - killedAt : null, sent}
  console.log(`kill -9 ledger: ${JSON.stringify(ledgerLine)}`)
  if (lost.length > 0) console.log(`queue on A: ${JSON.stringify((await admin.stats()).queues.find((q) => q.name === 'crash'))}; B consumers: ${onB ? 'started' : 'not started'}`)
  if (lost.length > 0) for (const [name, n] of [['A', a], ['B', b]] as const) console.log(`--- node ${name} log (tail)\n${n.log().split('\n').slice(-30).join('\n')}`)
  assert.equal(lost.length, 0)
  assert.deepEqual(ledger.unflaggedDuplicates(), [], 'duplicates are only flagged redeliveries')
  assert.ok(firstRedelivery, 'what C held unacked was redelivered by B')
  assert.ok(firstRedelivery.at - killedAt <= CLAIM_MS + 2000, `redelivered ${firstRedelivery.at - killedAt} ms after the kill`)
  for (const x of [admin, pub, onB]) await x?.close().catch(() => {})
})
