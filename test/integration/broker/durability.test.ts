import assert from 'node:assert/strict'
import {readdirSync} from 'node:fs'
import {join} from 'node:path'
import {after, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {waitFor} from '../../helpers/services.js'

let broker: BrokerProcess | undefined

after(async () => {
  await broker?.cleanup()
})

test('kill -9 mid-publish with confirms, then restart: every confirmed message is still there', async () => {
  broker = await spawnBroker()
  const admin = await broker.connect()
  await admin.declareExchange('orders.x', 'topic')
  await admin.declareQueue('orders', {deadLetter: 'orders.dlq', durable: true})
  await admin.bind('orders', 'orders.x', 'order.#')
  // one message that was delivered but never acked before the crash must come back too
  await admin.publish('orders.x', 'order.first', Buffer.from('first'), {messageId: 'first'})
  const taken = await admin.get('orders')
  assert.equal(taken?.messageId, 'first')

  const pub = await broker.connect()
  pub.on('error', () => {})
  const confirmed = new Set<string>()
  let sent = 0
  let stop = false
  const window = 100
  const inflight = new Set<Promise<void>>()
  const publishing = (async () => {
    while (!stop) {
      const id = `m${sent++}`
      const p = pub
        .publish('orders.x', `order.${sent % 7}`, Buffer.from(`payload-${id}-${'x'.repeat(200)}`), {messageId: id})
        .then(() => void confirmed.add(id))
        .catch(() => {
          stop = true
        })
      inflight.add(p)
      p.finally(() => inflight.delete(p))
      if (inflight.size >= window) await Promise.race(inflight)
    }
    await Promise.allSettled([...inflight])
  })()
  await waitFor(() => confirmed.size >= 3000, 60_000, 5)
  await broker.kill9()
  await publishing
  assert.ok(sent > confirmed.size, 'the kill happened while publishes were in flight')

  await broker.restart()
  const c = await broker.connect()
  const queues = await c.listQueues()
  const orders = queues.find((q) => q.name === 'orders')
  assert.ok(orders?.durable, 'the durable queue definition survived')
  assert.ok(queues.some((q) => q.name === 'orders.dlq'))
  const found = new Set<string>()
  let first: {redelivered: boolean} | undefined
  await c.consume('orders', {noAck: true, prefetch: 1000}, (d) => {
    if (d.messageId === 'first') first = d
    else found.add(d.messageId)
  })
  await waitFor(async () => (await c.listQueues()).find((q) => q.name === 'orders')!.messages === 0, 30_000)
  await c.listQueues()
  const lost = [...confirmed].filter((id) => !found.has(id))
  assert.deepEqual(lost, [], `${lost.length} of ${confirmed.size} confirmed messages were lost`)
  assert.ok(first, 'the unacked message was kept')
  assert.equal(first.redelivered, true)
  // the exchange and its binding came back too
  assert.deepEqual((await c.publish('orders.x', 'order.after', Buffer.from('after'))).queues, ['orders'])
  await c.close()
})

/**
 * Publishes bodyOf(id) to a durable queue with `window` confirms in flight until ready(confirmed) holds,
 * kills the broker with -9, restarts it and drains the queue: every confirmed message must come back
 * byte for byte.
 */
async function killMidPublish(b: BrokerProcess, queue: string, opts: {bodyOf: (id: string) => Buffer; window: number; prefetch: number; ready: (confirmed: number, segments: number) => boolean}): Promise<void> {
  const admin = await b.connect()
  await admin.declareQueue(queue, {durable: true})
  const pub = await b.connect()
  pub.on('error', () => {})
  const confirmed = new Set<string>()
  let sent = 0
  let stop = false
  const inflight = new Set<Promise<void>>()
  const publishing = (async () => {
    while (!stop) {
      const id = `${queue}-${sent++}`
      const p = pub
        .publish('', queue, opts.bodyOf(id), {messageId: id})
        .then(() => void confirmed.add(id))
        .catch(() => {
          stop = true
        })
      inflight.add(p)
      p.finally(() => inflight.delete(p))
      if (inflight.size >= opts.window) await Promise.race(inflight)
    }
    await Promise.allSettled([...inflight])
  })()
  await waitFor(() => opts.ready(confirmed.size, segments(b).length), 60_000, 5)
  await b.kill9()
  await publishing
  await b.restart()
  const c = await b.connect()
  const found = new Map<string, boolean>()
  await c.consume(queue, {noAck: true, prefetch: opts.prefetch}, (d) => found.set(d.messageId, d.body.equals(opts.bodyOf(d.messageId))))
  await waitFor(async () => (await c.listQueues()).find((q) => q.name === queue)!.messages === 0, 30_000)
  const lost = [...confirmed].filter((id) => !found.has(id))
  assert.deepEqual(lost, [], `${lost.length} of ${confirmed.size} confirmed messages were lost`)
  assert.deepEqual([...found].filter(([, same]) => !same), [], 'every body came back as it was sent')
  await c.close()
}

const segments = (b: BrokerProcess) => readdirSync(join(b.home, 'data', 'bodies')).filter((n) => n.endsWith('.seg'))
const patterned = (size: number, id: string) => {
  const body = Buffer.alloc(size)
  for (let i = 0; i < body.length; i++) body[i] = (i * 13 + id.charCodeAt(id.length - 1)) & 0xff
  body.write(id)
  return body
}

test('kill -9 mid-publish of big bodies (shared memory, sealed split), then restart: every confirmed one comes back byte for byte', async () => {
  const b = await spawnBroker()
  try {
    // every tenth one 1 MiB; their bodies are in body segment files, not broker.db
    const bodyOf = (id: string) => patterned((Number(id.split('-')[1]) % 10 === 0 ? 1024 * 1024 : 100 * 1024) + (id.length % 7), id)
    await killMidPublish(b, 'big', {bodyOf, prefetch: 64, ready: (confirmed, segs) => confirmed >= 80 && segs > 0, window: 16})
    // all taken (and so deleted): the segments go with their last rows
    await waitFor(() => segments(b).length === 0, 30_000)
  } finally {
    await b.cleanup()
  }
})

test('kill -9 mid-publish of 1 KiB messages (sealed in groups that go to a body segment), then restart: every confirmed one comes back byte for byte', async () => {
  const b = await spawnBroker()
  try {
    // a window of a thousand: a commit packs 256 KiB or more (GROUP_SEGMENT_COMMIT_MIN) and its groups of
    // 32 KiB or more go to a segment; smaller commits in between keep theirs in broker.db
    await killMidPublish(b, 'small', {bodyOf: (id) => patterned(1000 + (id.length % 7), id), prefetch: 1000, ready: (confirmed, segs) => confirmed >= 4000 && segs > 0, window: 1000})
  } finally {
    await b.cleanup()
  }
})
