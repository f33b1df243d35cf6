import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {test} from 'node:test'

import {startBaselineTwin} from '../../../src/lib/relay/bench.js'
import {RelayConnection} from '../../../src/lib/relay/client.js'
import {encrypt, newSymKey} from '../../../src/lib/relay/crypto.js'
import {MessageType, Op, SEND_HEADER_BYTES, V2_HEADER_BYTES} from '../../../src/lib/relay/protocol.js'

// The bench's baseline must take the relay's own client path: the same encrypted frames on the wire
// and a real ack back, so that the ratio measures only what the relay adds.
test('the bench baseline twin frames the relay client sends (texts and a streamed file) and acks each', async () => {
  const twin = await startBaselineTwin()
  const conn = await RelayConnection.connect({host: '127.0.0.1', port: twin.port}, 3)
  try {
    const me = randomBytes(16)
    const to = randomBytes(16)
    const sym = newSymKey('strong')
    let bytes = 0
    for (let i = 1; i <= 3; i++) {
      const sealed = encrypt('strong', sym, {recipient: to, sender: me, type: MessageType.text}, BigInt(i), Buffer.alloc(100, 0x61))
      const ack = await conn.send(me, Op.send, to, MessageType.text, sealed.length, sealed)
      bytes += V2_HEADER_BYTES + SEND_HEADER_BYTES + sealed.length
      assert.deepEqual(ack.subarray(0, 16), to, 'the ack names the destination')
      assert.equal(ack.readUInt32LE(16), i, 'one message id per send')
    }
    assert.equal(await conn.send(me, Op.send, to, MessageType.keyRequest, 0, Buffer.alloc(0)).then((a) => a.readUInt32LE(16)), 4)
    bytes += V2_HEADER_BYTES + SEND_HEADER_BYTES
    const size = 3 * 1024 * 1024 + 5
    async function* chunks(): AsyncGenerator<Buffer> {
      for (let off = 0; off < size; off += 64 * 1024) yield randomBytes(Math.min(64 * 1024, size - off))
    }
    const ack = await conn.send(me, Op.send, to, MessageType.file, size, chunks())
    bytes += V2_HEADER_BYTES + SEND_HEADER_BYTES + size
    assert.equal(ack.readUInt32LE(16), 5)
    assert.deepEqual(twin.stats, {bytes, requests: 5})
  } finally {
    conn.close()
    await twin.close()
  }
})
