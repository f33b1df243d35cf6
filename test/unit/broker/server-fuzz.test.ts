import assert from 'node:assert/strict'
import {randomBytes, randomInt} from 'node:crypto'
import net from 'node:net'
import {test} from 'node:test'

import {BrokerClient} from '../../../src/lib/client/client.js'
import {resolvePermissions} from '../../../src/lib/broker/permissions.js'
import {Logger} from '../../../src/lib/log.js'
import {startPlainServer} from '../../helpers/broker.js'

test('random and half-valid frames never crash the server (plain TCP, in process); it keeps serving', async () => {
  const errors: string[] = []
  const srv = await startPlainServer({
    limits: {handshakeTimeoutMs: 2000, maxPayload: 4096},
    logger: new Logger('error', '', (l) => errors.push(l)),
    permissionsFor: (id) => resolvePermissions([{admin: true, consume: ['*'], identity: '*', publish: ['*'], roles: []}], id),
  })
  const {port} = srv
  const verbs = ['HELLO', 'PUBLISH', 'PUBLISH_BATCH', 'CONSUME', 'GET', 'ACK', 'NACK', 'REJECT', 'DECLARE_QUEUE', 'DECLARE_EXCHANGE', 'BIND', 'DELETE_QUEUE', 'PURGE_QUEUE', 'STATUS', 'STATS', 'LIST_QUEUES', 'CANCEL', 'PUT_KEY', 'GET_KEY', 'PING', 'QUIT']
  const keys = ['name', 'count', 'batch', 'queue', 'exchange', 'key', 'tag', 'prefetch', 'no_ack', 'durable', 'dead_letter', 'ttl', 'max_length', 'type', 'consumer', 'requeue', 'reason', 'message_id', 'h.x']
  const vals = ['0', '1', '3', 'q0', 'q1', '', 'x%zz', '-1', '99999999999999999', 'topic', 'fanout', 'a.#', '%20']
  try {
    for (let round = 0; round < 100; round++) {
      const s = net.connect({host: '127.0.0.1', port})
      s.on('error', () => {})
      await new Promise((r) => s.once('connect', r))
      s.write('HELLO 1 identity=fuzz\n')
      for (let i = 0; i < 30; i++) {
        if (randomInt(0, 10) === 0) {
          s.write(randomBytes(randomInt(1, 200)))
          continue
        }
        let line = `${verbs[randomInt(0, verbs.length)]} ${randomInt(0, 5)}`
        for (let k = randomInt(0, 5); k > 0; k--) line += ` ${keys[randomInt(0, keys.length)]}=${vals[randomInt(0, vals.length)]}`
        const blen = randomInt(0, 3) === 0 ? randomInt(0, 6000) : 0
        s.write(blen ? `${line} ${blen}\n` : `${line}\n`)
        if (blen) s.write(randomBytes(Math.min(blen, 4096)))
      }
      await new Promise((r) => setTimeout(r, 2))
      s.destroy()
    }
    const c = await BrokerClient.connect({host: '127.0.0.1', plain: true, port, tls: {}})
    await c.declareQueue('after-fuzz')
    await c.publish('', 'after-fuzz', Buffer.from('still here'))
    assert.equal((await c.get('after-fuzz'))?.body.toString(), 'still here')
    await c.close()
    assert.deepEqual(errors.filter((l) => l.includes('ERROR')), [], 'no internal errors')
  } finally {
    await srv.stop()
  }
})
