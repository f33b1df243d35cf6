import assert from 'node:assert/strict'
import tls from 'node:tls'
import {after, before, test} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {clientTlsOptions} from '../../../src/lib/pki/index.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {uniqueName} from '../../helpers/services.js'

let broker: BrokerProcess

before(async () => {
  broker = await spawnBroker({env: {MQ_BROKER_HEARTBEAT_MS: '1000'}})
})

after(async () => {
  await broker?.cleanup()
})

test('a peer that never answers PING is closed; library clients and receive-only consumers stay connected', async () => {
  const q = uniqueName('hb')
  const admin = await broker.connect()
  await admin.declareQueue(q)
  // a receive-only consumer: it never sends a frame of its own while messages keep arriving
  const consumer = await broker.connect()
  let got = 0
  await consumer.consume(q, {noAck: true, prefetch: 10}, () => got++)
  let consumerClosed = false
  consumer.on('close', () => (consumerClosed = true))
  const pump = setInterval(() => void admin.publish('', q, Buffer.from('tick')).catch(() => {}), 100)

  const silent = await new Promise<tls.TLSSocket>((resolve, reject) => {
    const s = tls.connect({...clientTlsOptions(new MqHome(broker.home), 'admin'), checkServerIdentity: () => undefined, host: '127.0.0.1', port: broker.port}, () => resolve(s))
    s.once('error', reject)
  })
  let out = ''
  silent.on('data', (d: Buffer) => (out += d.toString()))
  silent.write('HELLO 1\n')
  await new Promise((r) => silent.once('close', r))
  clearInterval(pump)
  assert.match(out, /PING 0/)
  assert.match(out, /code=E_HEARTBEAT_TIMEOUT/)
  assert.equal(consumerClosed, false)
  assert.ok(got > 10)
  assert.ok((await admin.listQueues()).some((x) => x.name === q))
  await consumer.close()
  await admin.close()
})
