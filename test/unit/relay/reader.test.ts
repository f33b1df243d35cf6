import assert from 'node:assert/strict'
import {PassThrough} from 'node:stream'
import {test} from 'node:test'
import {setTimeout as sleep} from 'node:timers/promises'

import {SocketReader, StallTimeout} from '../../../src/lib/relay/reader.js'

// Waits of the usual length share one re-armed timer per reader: each wait must still get its
// full stall time from its own start, and a stall must still be reported.
test('a reader times out a wait only after stallMs of silence from that wait, however many waits came before', async () => {
  const sock = new PassThrough()
  const reader = new SocketReader(sock, 300)
  for (let i = 0; i < 4; i++) {
    // each byte arrives 200 ms into its wait: 800 ms in all, well past one 300 ms timer's life
    const got = reader.read(1)
    await sleep(200)
    sock.write(Buffer.from([i]))
    assert.deepEqual(await got, Buffer.from([i]))
  }
  const t = Date.now()
  await assert.rejects(reader.read(1), StallTimeout)
  const waited = Date.now() - t
  assert.ok(waited >= 290 && waited < 1500, `stalled after ${waited} ms`)
  // a byte after the stall is read by the next wait, whose timer is armed anew
  const next = reader.read(1)
  sock.write(Buffer.from([9]))
  assert.deepEqual(await next, Buffer.from([9]))
  sock.destroy()
})

test('a wait shorter than the stall time (poll) and a closed stream still end as before', async () => {
  const sock = new PassThrough()
  const reader = new SocketReader(sock, 10_000)
  const t = Date.now()
  assert.equal(await reader.poll(50), false)
  assert.ok(Date.now() - t < 1000)
  const pending = reader.fill(1)
  sock.destroy()
  assert.equal(await pending, false)
})
