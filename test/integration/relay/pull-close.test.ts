import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {test} from 'node:test'

import {Op, encodeSendHeader} from '../../../src/lib/relay/protocol.js'
import {tempHome} from '../../helpers/home.js'
import {RawClient, registerRaw, req, startRelay} from './harness.js'

// A fetch reads every entry of the reply and closes at once (`mq relay fetch` does). The relay
// must still count the reply as delivered: before, it made one more (empty) write after the last
// file chunk to learn that the reply was out, which failed when the peer had already closed, and
// the messages were delivered again on the next fetch.
test('a fetch that closes as soon as it has read the whole reply is not delivered again', async () => {
  const home = tempHome('mq-relay-pullclose-')
  const relay = await startRelay({home: home.dir})
  try {
    const c = await RawClient.connect(relay.port)
    const alice = await registerRaw(c, 3, 'pc-alice')
    const bob = await registerRaw(c, 3, 'pc-bob')
    for (let round = 0; round < 12; round++) {
      const text = Buffer.from(`text ${round}`)
      // a file entry last: its content is streamed from disk, so the relay reads to the end of the file after the last chunk went out
      const blob = randomBytes(256 * 1024 + round)
      c.write(req(3, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 3, text.length), text])))
      assert.equal((await c.response()).code, 2103)
      c.write(req(3, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 4, blob.length), blob])))
      assert.equal((await c.response()).code, 2103)

      const f = await RawClient.connect(relay.port)
      f.write(req(3, bob, Op.pull))
      const r = await f.response()
      assert.equal(r.code, 2104)
      assert.ok(r.payload.subarray(r.payload.length - blob.length).equals(blob), `round ${round}: the file arrives byte for byte`)
      f.sock.end()
      f.close()

      const again = await RawClient.connect(relay.port)
      // the relay settles the first pull after its last write; give it that moment
      await new Promise((r) => setTimeout(r, 50))
      again.write(req(3, bob, Op.pull))
      const second = await again.response()
      again.close()
      assert.equal(second.payload.length, 0, `round ${round}: ${second.payload.length} bytes delivered again`)
    }
    c.close()
  } finally {
    await relay.stop()
    home.cleanup()
  }
})
