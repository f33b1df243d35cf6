/**
 * The CipherMQ v1.0 listener against a real broker process: an unauthenticated door that reaches
 * nothing until the config lists queues and exchanges, says so on stderr at start, stays on
 * loopback, answers a publish_batch in one write and drops a message id it already stored.
 */
import assert from 'node:assert/strict'
import net from 'node:net'
import {after, describe, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {waitFor} from '../../helpers/services.js'

/** A CipherMQ client: `cmd` writes one line and resolves with the next reply line; `chunks` are the raw reads. */
async function cipherClient(port: number) {
  const s = net.connect({host: '127.0.0.1', port})
  await new Promise((r) => s.once('connect', r))
  const chunks: string[] = []
  const lines: string[] = []
  let buf = ''
  s.setEncoding('utf8')
  s.on('data', (d: string) => {
    chunks.push(d)
    buf += d
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i))
      buf = buf.slice(i + 1)
    }
  })
  let seen = 0
  const next = async () => {
    await waitFor(() => lines.length > seen)
    return lines[seen++]
  }
  return {
    chunks,
    close: () => s.destroy(),
    cmd: async (line: string) => {
      s.write(line + '\n')
      return next()
    },
    next,
    write: (line: string) => s.write(line + '\n'),
  }
}

const env = (id: string) => JSON.stringify({ciphertext: 'Y2lwaGVy', enc_session_key: 'a2V5', message_id: id, nonce: 'bm9uY2U=', tag: 'dGFn'})

describe('CipherMQ listener: no rights until granted', () => {
  let broker: BrokerProcess
  after(() => broker?.cleanup())

  test('by default it reaches nothing, says so on stderr, and binds loopback even when the broker listens on all addresses', async () => {
    broker = await spawnBroker({ciphermq: true, env: {MQ_BROKER_HOST: '0.0.0.0'}})
    assert.match(broker.log(), new RegExp(`CipherMQ listener on 127\\.0\\.0\\.1:${broker.ciphermqPort} \\(plain TCP, no authentication\\): its clients may reach nothing yet`))
    const admin = await broker.connect()
    await admin.publish('default_exchange', 'default_key', Buffer.from(env('pipeline-1')))
    await admin.close()
    const c = await cipherClient(broker.ciphermqPort!)
    try {
      assert.match(await c.cmd('fetch default_queue'), /^Error: ciphermq may not consume from queue "default_queue"/)
      assert.match(await c.cmd('consume default_queue'), /^Error: ciphermq may not consume from queue "default_queue"/)
      assert.match(await c.cmd(`publish default_exchange default_key ${env('forged')}`), /^Error: .*not allowed/)
      assert.match(await c.cmd('declare_queue mine'), /^Error: .*not allowed/)
      assert.match(await c.cmd('declare_exchange mine'), /^Error: .*not allowed/)
      assert.match(await c.cmd('stats'), /^Error: .*not allowed/)
    } finally {
      c.close()
    }
    const again = await broker.connect()
    assert.equal((await again.get('default_queue', {noAck: true}))?.body.toString(), env('pipeline-1'))
    assert.equal(await again.get('default_queue'), null, 'the forged publish went nowhere')
    await again.close()
    // not reachable on a non-loopback address of this machine
    const other = Object.values((await import('node:os')).networkInterfaces())
      .flat()
      .find((a) => a && a.family === 'IPv4' && !a.internal)
    if (other) {
      const err = await new Promise<Error | null>((resolve) => {
        const s = net.connect({host: other.address, port: broker.ciphermqPort!})
        s.once('connect', () => {
          s.destroy()
          resolve(null)
        })
        s.once('error', resolve)
      })
      assert.ok(err, `CipherMQ listener answered on ${other.address}`)
    }
  })
})

describe('CipherMQ listener: granted queues, one write per reply, duplicates dropped', () => {
  let broker: BrokerProcess
  after(() => broker?.cleanup())

  test('broker.ciphermq.queues / exchanges open exactly those, and the start line lists them', async () => {
    broker = await spawnBroker({ciphermq: true, env: {MQ_BROKER_CIPHERMQ_EXCHANGES: 'legacy.*', MQ_BROKER_CIPHERMQ_QUEUES: 'legacy.*'}})
    assert.match(broker.log(), /its clients may reach queues \[legacy\.\*\] \(declare, bind, consume, fetch\), exchanges \[legacy\.\*\] \(declare, publish\)/)
    const c = await cipherClient(broker.ciphermqPort!)
    try {
      assert.equal(await c.cmd('declare_queue legacy.q'), 'Queue declared')
      assert.equal(await c.cmd('declare_exchange legacy.ex'), 'Exchange declared')
      assert.equal(await c.cmd('bind legacy.q legacy.ex rk'), 'Queue bound')
      assert.equal(await c.cmd(`publish legacy.ex rk ${env('g-1')}`), 'ACK g-1')
      assert.match(await c.cmd('fetch legacy.q'), /^Message: g-1 /)
      assert.match(await c.cmd('fetch default_queue'), /^Error: .*delivery queue/)
      const admin = await broker.connect()
      await admin.declareQueue('orders')
      await admin.close()
      assert.match(await c.cmd('fetch orders'), /^Error: .*not allowed to use queue "orders".*broker\.ciphermq\.queues/)
    } finally {
      c.close()
    }
  })

  test("publish_batch: every ACK line arrives in the client's first read (one write, as CipherMQ does)", async () => {
    const c = await cipherClient(broker.ciphermqPort!)
    try {
      const ids = Array.from({length: 350}, (_, i) => `b-${String(i).padStart(3, '0')}`)
      c.write(`publish_batch legacy.ex rk [${ids.map(env).join(',')}]`)
      await waitFor(() => c.chunks.length > 0)
      // a Sender.py read(4096) sees exactly what the first chunk holds
      const first = c.chunks[0]
      assert.equal(first, ids.map((id) => `ACK ${id}`).join('\n') + '\n', `first read held ${first.split('\n').length - 1} of ${ids.length} lines`)
      assert.ok(Buffer.byteLength(first) < 4096)
    } finally {
      c.close()
    }
  })

  test('a publish whose message_id is already stored is dropped: "Duplicate message <id> ignored"', async () => {
    const admin = await broker.connect()
    await admin.declareQueue('legacy.dups')
    await admin.bind('legacy.dups', 'legacy.ex', 'dups')
    const c = await cipherClient(broker.ciphermqPort!)
    try {
      const ids = Array.from({length: 9}, (_, i) => `d-${i}`)
      assert.equal(await c.cmd(`publish legacy.ex dups ${env('d-0')}`), 'ACK d-0')
      assert.equal(await c.cmd(`publish legacy.ex dups ${env('d-0')}`), 'Error: Duplicate message d-0 ignored')
      // a Sender that did not see its ACKs sends the whole batch again
      c.write(`publish_batch legacy.ex dups [${ids.slice(1).map(env).join(',')}]`)
      for (const id of ids.slice(1)) assert.equal(await c.next(), `ACK ${id}`)
      c.write(`publish_batch legacy.ex dups [${ids.map(env).join(',')}]`)
      for (const id of ids) assert.equal(await c.next(), `Error: Duplicate message ${id} ignored`)
      const q = (await admin.listQueues()).find((x) => x.name === 'legacy.dups')
      assert.equal(q?.messages, 9, '9 distinct messages stay 9')
    } finally {
      c.close()
      await admin.close()
    }
  })
})
