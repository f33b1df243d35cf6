import assert from 'node:assert/strict'
import type net from 'node:net'
import {test} from 'node:test'

import {resolvePermissions} from '../../../src/lib/broker/permissions.js'
import {BrokerClient, type Delivery} from '../../../src/lib/client/client.js'
import {startPlainServer} from '../../helpers/broker.js'

const allowAll = (id: string) => resolvePermissions([{admin: true, consume: ['*'], identity: '*', publish: ['*'], roles: []}], id)

/** a body that says which message it is in every byte, so a swapped, cut or mixed body shows */
const bodyOf = (i: number, size: number) => Buffer.alloc(size, `<${i}>`)

test('a window of big confirmed publishes leaves the client a frame or so at a time, in order: each body whole, small ones and acks never overtake', async () => {
  const srv = await startPlainServer({limits: {maxPayload: 2 << 20, maxUnconfirmed: 1000}, permissionsFor: allowAll})
  const pub = await BrokerClient.connect({batchConfirms: true, host: '127.0.0.1', plain: true, port: srv.port, tls: {}})
  const sub = await BrokerClient.connect({host: '127.0.0.1', plain: true, port: srv.port, tls: {}})
  try {
    await pub.declareQueue('big')
    const got: Delivery[] = []
    let done!: () => void
    const all = new Promise<void>((r) => (done = r))
    const total = 120
    await sub.consume('big', {prefetch: 1000}, (d) => {
      got.push(d)
      sub.ack(d.deliveryTag)
      if (got.length === total) done()
    })
    // big (1 MiB, 256 KiB) and small bodies mixed, all handed over at once as a bench window is
    const sizes = Array.from({length: total}, (_, i) => (i % 3 === 0 ? 1 << 20 : i % 3 === 1 ? 256 * 1024 : 100))
    const sock = (pub as unknown as {sock: net.Socket}).sock
    let most = 0
    const sent = sizes.map((size, i) => {
      const p = pub.publish('', 'big', bodyOf(i, size))
      most = Math.max(most, sock.writableLength)
      return p
    })
    await new Promise((r) => setImmediate(r))
    most = Math.max(most, sock.writableLength)
    // 90 MiB handed over in one go: the socket's buffer took at most a few frames, the rest waited in order
    assert.ok(most <= 3 << 20, `${most} bytes in the socket's buffer at once`)
    await Promise.all(sent)
    await all
    assert.deepEqual(
      got.map((d) => d.body.length),
      sizes,
    )
    for (let i = 0; i < total; i++) assert.ok(got[i].body.equals(bodyOf(i, sizes[i])), `message ${i} arrived as it was published`)
    assert.equal(new Set(got.map((d) => d.messageId)).size, total)
  } finally {
    await pub.close()
    await sub.close()
    await srv.stop()
  }
})

test('unconfirmed big publishes: publishNoConfirm says when to wait, drained() resolves once the held frames are out, nothing is lost', async () => {
  const srv = await startPlainServer({limits: {maxPayload: 2 << 20}, permissionsFor: allowAll})
  const pub = await BrokerClient.connect({host: '127.0.0.1', plain: true, port: srv.port, tls: {}})
  const sub = await BrokerClient.connect({host: '127.0.0.1', plain: true, port: srv.port, tls: {}})
  try {
    await pub.declareQueue('nc')
    const total = 60
    const got: Buffer[] = []
    let done!: () => void
    const all = new Promise<void>((r) => (done = r))
    await sub.consume('nc', {noAck: true, prefetch: 1000}, (d) => {
      got.push(d.body)
      if (got.length === total) done()
    })
    let waits = 0
    for (let i = 0; i < total; i++) {
      if (!pub.publishNoConfirm('', 'nc', bodyOf(i, 512 * 1024))) {
        waits++
        await pub.drained()
      }
    }
    await all
    assert.ok(waits > 0, 'a 30 MiB burst asked the caller to wait')
    for (let i = 0; i < total; i++) assert.ok(got[i].equals(bodyOf(i, 512 * 1024)), `message ${i} arrived as it was published`)
  } finally {
    await pub.close()
    await sub.close()
    await srv.stop()
  }
})
