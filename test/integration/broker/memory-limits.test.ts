import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import net from 'node:net'
import tls from 'node:tls'
import {after, before, describe, test} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {clientTlsOptions} from '../../../src/lib/pki/index.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {uniqueName} from '../../helpers/services.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function rawTls(b: BrokerProcess): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({...clientTlsOptions(new MqHome(b.home), 'admin'), checkServerIdentity: () => undefined, host: '127.0.0.1', port: b.port}, () => resolve(s))
    s.once('error', reject)
  })
}

/** Everything the peer sends until it closes the connection. */
function readAll(s: net.Socket): Promise<string> {
  let out = ''
  s.on('data', (d: Buffer) => (out += d.toString()))
  s.on('error', () => {})
  return new Promise((r) => s.once('close', () => r(out)))
}

/** Resident (VmRSS) and allocated (VmData: heap and anonymous mappings, touched or not) bytes of a process. */
function memory(pid: number): {rss: number; data: number} {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (name: string) => {
    const m = new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)
    assert.ok(m, `${name} in /proc/<pid>/status`)
    return Number(m[1]) * 1024
  }
  return {data: kb('VmData'), rss: kb('VmRSS')}
}

describe('broker connection limits', () => {
  let broker: BrokerProcess
  before(async () => {
    broker = await spawnBroker({ciphermq: true, env: {MQ_BROKER_CIPHERMQ_MAX_CONNECTIONS: '2', MQ_BROKER_CIPHERMQ_MAX_LINE: '4096', MQ_BROKER_MAX_CONNECTIONS: '3'}})
  })
  after(async () => {
    await broker?.cleanup()
  })

  test('native connections past broker.max_connections are refused with E_TOO_MANY_CONNECTIONS; existing ones keep working', async () => {
    const q = uniqueName('limit')
    const clients = [await broker.connect(), await broker.connect(), await broker.connect()]
    await clients[0].declareQueue(q)
    const extra = await rawTls(broker)
    const out = await readAll(extra)
    assert.match(out, /^ERR 0 .*code=E_TOO_MANY_CONNECTIONS/)
    assert.match(out, /broker\.max_connections/)
    // the three connections still work
    for (const c of clients) await c.publish('', q, Buffer.from('still here'))
    assert.equal((await clients[1].listQueues()).find((x) => x.name === q)?.messages, 3)
    assert.match(broker.log(), /connection refused: broker\.max_connections reached/)
    // a freed slot can be taken again
    await clients.pop()!.close()
    let again
    for (let i = 0; i < 50 && !again; i++) {
      again = await broker.connect().catch(() => undefined)
      if (!again) await sleep(100)
    }
    assert.ok(again, 'a connection succeeds once one was closed')
    await again.publish('', q, Buffer.from('new'))
    await again.close()
    for (const c of clients) await c.close()
  })

  test('CipherMQ: connections past broker.ciphermq.max_connections are refused; a line past max_line closes only that connection', async () => {
    const connect = async () => {
      const s = net.connect(broker.ciphermqPort!, '127.0.0.1')
      await new Promise((r) => s.once('connect', r))
      return s
    }
    const a = await connect()
    const b = await connect()
    await sleep(200)
    const refused = await readAll(await connect())
    assert.match(refused, /^Error: too many connections/)

    // a line that never ends is cut off at max_line (4096), not max_payload
    const aOut = readAll(a)
    a.write('publish x y ' + 'A'.repeat(10_000))
    assert.match(await aOut, /Error: line too long .*broker\.ciphermq\.max_line/)

    // b is unaffected
    let bOut = ''
    b.setEncoding('utf8')
    b.on('data', (d: string) => (bOut += d))
    b.write('stats\n')
    for (let i = 0; i < 50 && !bOut.includes('\n'); i++) await sleep(100)
    // (an answer, whatever the listener's grants: this broker grants its CipherMQ clients nothing)
    assert.match(bOut, /^(Stats: |Error: not allowed to read stats)/)
    b.destroy()
  })
})

describe('broker memory under claimed-but-unsent bodies', () => {
  let broker: BrokerProcess
  before(async () => {
    broker = await spawnBroker()
  })
  after(async () => {
    await broker?.cleanup()
  })

  test('30 connections each claiming a 16 MiB body and sending a few bytes do not grow the broker memory by 16 MiB each', async () => {
    const n = 30
    const socks: tls.TLSSocket[] = []
    for (let i = 0; i < n; i++) {
      const s = await rawTls(broker)
      s.on('error', () => {})
      s.on('data', () => {})
      s.write('HELLO 1\n')
      socks.push(s)
    }
    await sleep(500)
    const before = memory(broker.proc.pid!)
    // each announces the maximum payload and sends 10 bytes of it (the slow-drip timeout is minutes away for 16 MiB)
    for (const s of socks) s.write(`PUBLISH 0 exchange= key=x ${16 * 1024 * 1024}\n0123456789`)
    await sleep(1500)
    const now = memory(broker.proc.pid!)
    const mib = (x: number) => Math.round(x / 1048576)
    // one preallocated 16 MiB body per connection would be 480 MiB. Linux only makes untouched pages resident
    // when written, so VmData (what was allocated) shows the preallocation even while VmRSS does not yet;
    // growing the buffer as bytes arrive keeps both well under 2 MiB per connection
    assert.ok(now.rss - before.rss < 64 * 1024 * 1024, `VmRSS grew by ${mib(now.rss - before.rss)} MiB for ${n} claimed 16 MiB bodies`)
    assert.ok(now.data - before.data < 64 * 1024 * 1024, `VmData grew by ${mib(now.data - before.data)} MiB for ${n} claimed 16 MiB bodies`)
    // the broker still serves normal traffic
    const c = await broker.connect()
    const q = uniqueName('rss')
    await c.declareQueue(q)
    await c.publish('', q, Buffer.from('ok'))
    await c.close()
    for (const s of socks) s.destroy()
  })
})
