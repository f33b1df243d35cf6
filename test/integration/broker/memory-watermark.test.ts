import assert from 'node:assert/strict'
import {after, before, describe, test} from 'node:test'

import {ALLOW_ALL, type Engine} from '../../../src/lib/broker/engine.js'
import {BrokerClient} from '../../../src/lib/client/client.js'
import {startPlainServer} from '../../helpers/broker.js'
import {waitFor} from '../../helpers/services.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('the broker-wide memory high watermark', () => {
  let srv: Awaited<ReturnType<typeof startPlainServer>>
  let engine: Engine

  before(async () => {
    // 2 bytes: any broker is above it from the first check
    srv = await startPlainServer({engine: {memoryHighWatermark: 2}, permissionsFor: (identity) => ({...ALLOW_ALL, identity, roles: []})})
    engine = srv.engine
    engine.declareQueue('q')
  })
  after(async () => {
    await srv.stop()
  })

  test('above it a publisher is paused (TCP back-pressure) and stats say why; once memory is back under it, the publisher resumes', async () => {
    const pub = await BrokerClient.connect({host: '127.0.0.1', identity: 'pub', plain: true, port: srv.port, tls: {}})
    const admin = await BrokerClient.connect({host: '127.0.0.1', identity: 'admin', plain: true, port: srv.port, tls: {}})
    try {
      const st = await admin.stats()
      assert.equal(st.memory?.alarm, true)
      assert.equal(st.memory?.highWatermark, 2)
      assert.ok(st.memory!.rss > 2)
      // the publish that finds the alarm on is taken; the connection is then not read any more
      await pub.publish('', 'q', Buffer.from('first'))
      let confirmed = 0
      const later = Promise.all(Array.from({length: 5}, (_, i) => pub.publish('', 'q', Buffer.from(`later ${i}`)).then(() => void confirmed++)))
      await sleep(600)
      assert.equal(confirmed, 0, 'no publish is taken while the alarm is on')
      assert.equal(engine.queues.get('q')!.messages, 1)
      // a consumer keeps working meanwhile: that is what brings memory down
      const got = await admin.get('q', {noAck: true})
      assert.equal(got?.body.toString(), 'first')

      // memory back under the watermark (here: the watermark raised above it): publishers resume
      engine.memory.highWatermark = 1e15
      await later
      assert.equal(confirmed, 5)
      await waitFor(async () => (await admin.stats()).memory?.alarm === false, 5000)
      assert.equal(engine.queues.get('q')!.messages, 5)
    } finally {
      await pub.close()
      await admin.close()
    }
  })
})
