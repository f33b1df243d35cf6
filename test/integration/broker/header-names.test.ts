import assert from 'node:assert/strict'
import net from 'node:net'
import {after, before, describe, test} from 'node:test'

import {BrokerClient} from '../../../src/lib/client/client.js'
import {ALLOW_ALL, type Engine} from '../../../src/lib/broker/engine.js'
import {startPlainServer} from '../../helpers/broker.js'

/** Sends raw protocol text and collects what comes back until `until` matches. */
function raw(port: number, text: string, until: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    let got = ''
    const t = setTimeout(() => {
      s.destroy()
      reject(new Error(`no ${until} in ${JSON.stringify(got)}`))
    }, 5000)
    s.on('data', (d) => {
      got += d.toString('latin1')
      if (until.test(got)) {
        clearTimeout(t)
        s.destroy()
        resolve(got)
      }
    })
    s.on('error', () => {})
    s.write(text)
  })
}

/**
 * Header names a DELIVER frame cannot carry used to be accepted by PUBLISH and then threw while
 * the engine pushed the message to a consumer: an uncaught exception that killed the broker
 * (and again after every restart, for a durable queue).
 */
describe('message header names', () => {
  let srv: Awaited<ReturnType<typeof startPlainServer>>
  let engine: Engine
  let port: number

  before(async () => {
    srv = await startPlainServer({permissionsFor: (identity) => ({...ALLOW_ALL, identity, roles: []})})
    ;({engine, port} = srv)
    engine.declareQueue('q')
  })
  after(async () => {
    await srv.stop()
  })

  test('a publish with a header name a delivery cannot carry is refused, and the broker keeps serving', async () => {
    for (const name of ['a/b', 'caf\u00e9', 'x'.repeat(129)]) {
      const reply = await raw(port, `HELLO 1 version=1\nPUBLISH 2 exchange= key=q h.${encodeURIComponent(name)}=1 1\nX\n`, /(OK|ERR) 2 /)
      assert.match(reply, /ERR 2 code=E_BAD_HEADER/, name)
    }
    assert.equal(engine.queues.get('q')!.ready.length, 0)
    // a consumer still gets good messages
    const c = await BrokerClient.connect({host: '127.0.0.1', identity: 'alice', plain: true, port, tls: {}})
    try {
      await c.publish('', 'q', Buffer.from('fine'), {headers: {'trace-id': 'abc'}})
      const got = await new Promise<{body: string; headers: Record<string, string>}>((resolve) => {
        void c.consume('q', {prefetch: 10}, (d) => resolve({body: d.body.toString(), headers: d.headers}))
      })
      assert.deepEqual(got, {body: 'fine', headers: {'trace-id': 'abc'}})
    } finally {
      await c.close()
    }
  })
})
