/**
 * Issue 18, failure 5: SIGTERM of the broker while publishers are mid-flight. Every publish the
 * broker wrote must be confirmed before it closes (no written-but-unconfirmed message, which a
 * retrying publisher turns into a duplicate), and every confirmed one is there after the restart.
 */
import assert from 'node:assert/strict'
import {test} from 'node:test'

import type {BrokerClient} from '../../../src/lib/client/client.js'
import {spawnBroker} from '../../helpers/broker.js'

test('publishers mid-flight at SIGTERM get a confirm for everything the broker wrote', {timeout: 120_000}, async () => {
  const b = await spawnBroker({env: {MQ_BROKER_STOP_TIMEOUT_MS: '5000'}})
  try {
    const admin = await b.connect()
    await admin.declareQueue('sigterm', {durable: true})
    await admin.close()
    const confirmed = new Set<string>()
    const refused = new Set<string>()
    const publishers: BrokerClient[] = []
    for (let p = 0; p < 3; p++) publishers.push(await b.connect())
    let stop = false
    // each publisher keeps 50 publishes in flight until its connection goes away
    const runs = publishers.map(async (c, p) => {
      let n = 0
      const inFlight = new Set<Promise<void>>()
      while (!stop) {
        const id = `p${p}-${n++}`
        const pr = c.publish('', 'sigterm', Buffer.from(id), {messageId: id}).then(
          () => void confirmed.add(id),
          () => void refused.add(id),
        )
        inFlight.add(pr)
        void pr.finally(() => inFlight.delete(pr))
        if (inFlight.size >= 50) await Promise.race(inFlight)
        if (refused.size > 0) break
      }
      await Promise.all(inFlight)
    })
    // let the traffic flow, then stop the broker under it
    await new Promise((r) => setTimeout(r, 1500))
    const sent = () => confirmed.size + refused.size
    assert.ok(confirmed.size > 100, `only ${confirmed.size} confirms before SIGTERM`)
    await b.stop()
    stop = true
    await Promise.all(runs)
    for (const c of publishers) await c.close().catch(() => {})
    assert.match(b.log(), /shutting down/)

    // what the broker kept
    await b.restart()
    const reader = await b.connect()
    const stored = new Set<string>()
    for (;;) {
      const d = await reader.get('sigterm', {noAck: true})
      if (!d) break
      stored.add(d.messageId)
    }
    await reader.close()
    const lost = [...confirmed].filter((id) => !stored.has(id))
    const unconfirmed = [...stored].filter((id) => !confirmed.has(id))
    assert.deepEqual(lost, [], 'confirmed, then lost')
    assert.deepEqual(unconfirmed, [], `written but never confirmed (${unconfirmed.length} of ${sent()} publishes; a retry would duplicate them)`)
    assert.ok(refused.size > 0, 'the publishers saw the broker go away')
  } finally {
    await b.cleanup()
  }
})
