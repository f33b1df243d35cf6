import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {join} from 'node:path'
import {test} from 'node:test'

import {Op, encodeSendHeader} from '../../../src/lib/relay/protocol.js'
import {tempHome} from '../../helpers/home.js'
import {RawClient, childRelay, registerRaw, req, startRelay} from './harness.js'

test('a relay killed with SIGKILL keeps every text it acknowledged, sent one at a time and pipelined, with its bytes', async () => {
  const home = tempHome('mq-relay-kill-')
  const child = await childRelay(home.dir)
  let relay: Awaited<ReturnType<typeof startRelay>> | undefined
  try {
    const c = await RawClient.connect(child.port)
    const alice = await registerRaw(c, 3, 'k-alice')
    const bob = await registerRaw(c, 3, 'k-bob')
    const sent = new Map<number, Buffer>()
    // one at a time (each its own commit), then 64 pipelined (one commit): all acknowledged
    const text = () => randomBytes(40 + Math.floor(Math.random() * 200))
    for (let i = 0; i < 200; i++) {
      const t = text()
      c.write(req(3, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 3, t.length), t])))
      const r = await c.response()
      assert.equal(r.code, 2103)
      sent.set(r.payload.readUInt32LE(16), t)
    }
    const burst = Array.from({length: 64}, text)
    c.write(Buffer.concat(burst.map((t) => req(3, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 3, t.length), t])))))
    for (const t of burst) sent.set((await c.response()).payload.readUInt32LE(16), t)

    child.proc.kill('SIGKILL')
    await new Promise((r) => child.proc.once('exit', r))
    c.close()

    relay = await startRelay({home: home.dir})
    const b = await RawClient.connect(relay.port)
    b.write(req(3, bob, Op.pull))
    const r = await b.response()
    assert.equal(r.code, 2104)
    const got = new Map<number, Buffer>()
    for (let o = 0; o < r.payload.length; ) {
      const size = r.payload.readUInt32LE(o + 21)
      got.set(r.payload.readUInt32LE(o + 16), r.payload.subarray(o + 25, o + 25 + size))
      o += 25 + size
    }
    assert.equal(got.size, 264)
    assert.deepEqual(got, sent)
    b.close()
  } finally {
    child.proc.kill('SIGKILL')
    await relay?.stop()
    home.cleanup()
  }
})
