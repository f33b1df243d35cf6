/**
 * Queues bigger than memory, as an operator sees them: a broker with a 50-message window holds a
 * backlog on disk (mq stats shows it), survives kill -9 in the middle of a drain without losing a
 * confirmed message, and says so on /health and in mq stats when it is above its memory watermark.
 */
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {after, describe, it} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {ApiClient} from '../../../src/lib/http/client.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {waitFor} from '../../helpers/services.js'

describe('paging and the memory watermark (spawned broker)', () => {
  const brokers: BrokerProcess[] = []
  after(async () => {
    for (const b of brokers) await b.cleanup()
  })

  it('kill -9 during a drain of a backlog mostly on disk loses nothing confirmed; after the restart the rest comes in order', async () => {
    const broker = await spawnBroker({env: {MQ_BROKER_QUEUE_WINDOW_MESSAGES: '50'}})
    brokers.push(broker)
    const pub = await broker.connect('admin', {batchConfirms: true})
    await pub.declareQueue('backlog', {durable: true})
    const N = 3000
    const body = (i: number) => Buffer.from(`${i}:${'x'.repeat(500)}`)
    const confirms: Promise<unknown>[] = []
    for (let i = 0; i < N; i++) confirms.push(pub.publish('', 'backlog', body(i), {messageId: `b-${i}`}))
    await Promise.all(confirms)
    await pub.close()

    const stats = JSON.parse((await runCli(['stats', '--json'], {env: broker.cliEnv()})).stdout)
    const q = stats.queues.find((x: {name: string}) => x.name === 'backlog')
    assert.equal(q.messages, N)
    assert.ok(q.memoryMessages <= 50, `in memory: ${q.memoryMessages}`)
    assert.ok(q.diskBytes > (N - 50) * 500, `on disk: ${q.diskBytes} bytes`)
    const table = await runCli(['stats'], {env: broker.cliEnv()})
    assert.match(table.stdout, /MEMORY-BYTES +DISK-BYTES/)
    assert.match(table.stdout, new RegExp(`backlog +yes +${N} +\\d+ +${q.diskBytes} `))

    // drain part of it, acking as we go, and kill the broker mid-drain
    const seen = new Set<string>()
    const c = await broker.connect()
    c.on('error', () => {})
    await c.consume('backlog', {prefetch: 20}, (d) => {
      seen.add(d.messageId)
      c.ack(d.deliveryTag)
    })
    await waitFor(() => seen.size >= 1000, 30_000, 5)
    await broker.kill9()
    assert.ok(seen.size < N, 'killed during the drain')

    await broker.restart()
    const c2 = await broker.connect()
    const after: number[] = []
    await c2.consume('backlog', {prefetch: 50}, (d) => {
      after.push(Number(d.body.toString().split(':')[0]))
      seen.add(d.messageId)
      c2.ack(d.deliveryTag)
    })
    await waitFor(() => seen.size >= N, 30_000, 10)
    const lost = Array.from({length: N}, (_, i) => `b-${i}`).filter((id) => !seen.has(id))
    assert.deepEqual(lost, [], `${lost.length} confirmed messages lost`)
    assert.deepEqual(after, [...after].sort((a, b) => a - b), 'after the restart the backlog comes in publish order')
    assert.equal(after.at(-1), N - 1)
    await c2.close()
  })

  it('above the memory high watermark, /health is degraded and mq stats says why', async () => {
    const broker = await spawnBroker({env: {MQ_BROKER_MEMORY_HIGH_WATERMARK: '2'}})
    brokers.push(broker)
    const home = new MqHome(broker.home)
    const api = new ApiClient(`https://127.0.0.1:${broker.apiPort}`, {ca: readFileSync(home.caCert)}, 10_000, 1)
    try {
      const h = await api.request<Record<string, any>>('GET', '/health')
      assert.equal(h.status, 200, 'degraded still serves')
      assert.equal(h.body.status, 'degraded')
      assert.equal(h.body.components.engine.status, 'degraded')
      assert.match(h.body.components.engine.reason, /above the high watermark of 2 bytes: publishers are paused/)
      assert.match(h.body.components.engine.hint, /^Try this: /)
    } finally {
      api.close()
    }
    const s = await runCli(['stats'], {env: broker.cliEnv()})
    assert.equal(s.code, 0, s.stderr)
    assert.match(s.stdout, /ALARM: above the high watermark, publishers are paused/)
    assert.match(broker.log(), /memory high watermark reached/)
  })
})
