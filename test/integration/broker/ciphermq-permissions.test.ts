import assert from 'node:assert/strict'
import net from 'node:net'
import {after, before, describe, test} from 'node:test'

import {CipherMqListener} from '../../../src/lib/broker/ciphermq.js'
import {Engine} from '../../../src/lib/broker/engine.js'
import {type PermissionRule, resolvePermissions} from '../../../src/lib/broker/permissions.js'
import {silentLogger} from '../../../src/lib/log.js'

/** One CipherMQ text command per call, on one connection; resolves with the reply line. */
async function session(port: number): Promise<{cmd: (line: string) => Promise<string>; close: () => void}> {
  const s = net.connect(port, '127.0.0.1')
  await new Promise((r) => s.once('connect', r))
  let buf = ''
  const waiting: ((l: string) => void)[] = []
  s.setEncoding('utf8')
  s.on('data', (d: string) => {
    buf += d
    let nl: number
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      waiting.shift()?.(line)
    }
  })
  return {
    close: () => s.destroy(),
    cmd: (line) =>
      new Promise((resolve) => {
        waiting.push(resolve)
        s.write(line + '\n')
      }),
  }
}

/**
 * The CipherMQ listener has no authentication, so its clients act as the identity "ciphermq" and
 * get that identity's broker.permissions, not unlimited rights.
 */
describe('CipherMQ listener permissions', () => {
  const rules: PermissionRule[] = [
    {admin: true, consume: ['*'], identity: 'admin', publish: ['*'], roles: ['admin']},
    {admin: false, consume: ['legacy.*'], identity: 'ciphermq', publish: ['legacy.*'], roles: []},
  ]
  const engine = new Engine()
  let listener: CipherMqListener
  let port: number

  before(async () => {
    engine.declareQueue('payments')
    engine.declareExchange('payments-ex', 'direct')
    engine.bind('payments', 'payments-ex', 'pay')
    engine.publish('payments-ex', 'pay', Buffer.from('{"message_id":"m1","secret":"x"}'))
    listener = new CipherMqListener({engine, logger: silentLogger, maxLine: 1 << 20, perms: resolvePermissions(rules, 'ciphermq')})
    port = await listener.listen(0, '127.0.0.1')
  })
  after(async () => {
    await listener.close()
    engine.stop()
  })

  test('it cannot read, consume, publish to or bind queues outside its permissions', async () => {
    const c = await session(port)
    try {
      assert.match(await c.cmd('fetch payments'), /^Error: .*not allowed/)
      assert.match(await c.cmd('consume payments'), /^Error: .*not allowed/)
      assert.match(await c.cmd('publish payments-ex pay {"message_id":"forged"}'), /^Error: .*not allowed/)
      assert.match(await c.cmd('declare_queue stolen'), /^Error: .*not allowed/)
      assert.match(await c.cmd('bind payments legacy.ex pay'), /^Error: .*not allowed/)
      assert.equal(engine.queues.get('payments')!.ready.length, 1)
      assert.equal(engine.queues.has('stolen'), false)
      // its own namespace works as before
      assert.equal(await c.cmd('declare_queue legacy.q'), 'Queue declared')
      assert.equal(await c.cmd('declare_exchange legacy.ex'), 'Exchange declared')
      assert.equal(await c.cmd('bind legacy.q legacy.ex k'), 'Queue bound')
      assert.equal(await c.cmd('publish legacy.ex k {"message_id":"ok1","ciphertext":"AA=="}'), 'ACK ok1')
      assert.match(await c.cmd('fetch legacy.q'), /^Message: ok1 /)
    } finally {
      c.close()
    }
  })
})
