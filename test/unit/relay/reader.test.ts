import assert from 'node:assert/strict'
import {once} from 'node:events'
import {type AddressInfo, type Socket, connect, createServer} from 'node:net'
import {PassThrough} from 'node:stream'
import {test} from 'node:test'
import {setTimeout as sleep} from 'node:timers/promises'

import {ReplyWriter, SocketReader, StallTimeout} from '../../../src/lib/relay/reader.js'

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

/** the socket's 'close' (once() would reject on the 'error' before it) */
const closed = (s: Socket) => new Promise<void>((r) => s.once('close', () => r()))

/** A loopback pair: the server side of one TCP connection, and the client side. */
async function socketPair(): Promise<{server: Socket; client: Socket; close: () => void}> {
  const srv = createServer()
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const accepted = new Promise<Socket>((r) => srv.once('connection', r))
  const client = connect({host: '127.0.0.1', port: (srv.address() as AddressInfo).port})
  const server = await accepted
  server.on('error', () => {})
  client.on('error', () => {})
  return {client, close: () => (server.destroy(), client.destroy(), srv.close()), server}
}

test('ReplyWriter: sent() fails when the peer reset before taking the reply, even asked after the reset', async () => {
  const {client, close, server} = await socketPair()
  try {
    client.pause()
    const out = new ReplyWriter(server)
    const chunk = Buffer.alloc(1 << 20, 1)
    // no wait on the socket's buffer: the writes queue up, as a pull's last entry does
    for (let i = 0; i < 64; i++) server.write(chunk)
    void out.write(Buffer.alloc(100, 2)).catch(() => {})
    await sleep(50)
    client.resetAndDestroy()
    await closed(server)
    await assert.rejects(out.sent())
  } finally {
    close()
  }
})

test('ReplyWriter: a reply the peer read in full counts as sent, however the peer closes afterwards (end or reset)', async () => {
  for (const how of ['end', 'reset'] as const) {
    const {client, close, server} = await socketPair()
    try {
      const out = new ReplyWriter(server)
      const reply = Buffer.alloc(1 << 20, 7)
      let got = 0
      const all = new Promise<void>((r) =>
        client.on('data', (c: Buffer) => {
          got += c.length
          if (got === reply.length) r()
        }),
      )
      await out.write(reply.subarray(0, 1000))
      await out.write(reply.subarray(1000))
      await all
      if (how === 'end') client.end()
      else client.resetAndDestroy()
      await closed(server)
      await out.sent()
    } finally {
      close()
    }
  }
})

// A sink that returns nothing is called chunk after chunk with no await between them; one that
// returns a promise holds the stream (and so the socket) until it settles.
test('stream() hands every byte over in order to a sink that returns nothing, and waits for one that returns a promise', async () => {
  const sock = new PassThrough()
  const reader = new SocketReader(sock, 10_000)
  const sent = Buffer.from(Array.from({length: 1000}, (_, i) => i & 0xff))
  for (let o = 0; o < sent.length; o += 97) sock.write(sent.subarray(o, o + 97))
  const got: Buffer[] = []
  await reader.stream(600, (c) => {
    got.push(c)
  })
  assert.deepEqual(Buffer.concat(got), sent.subarray(0, 600))

  let release!: () => void
  const held = new Promise<void>((r) => (release = r))
  const seen: number[] = []
  let calls = 0
  const done = reader.stream(400, (c) => {
    seen.push(c.length)
    calls++
    return calls === 1 ? held : undefined
  })
  await sleep(50)
  assert.equal(calls, 1, 'the next chunk waits for the first sink promise')
  release()
  await done
  assert.equal(seen.reduce((x, y) => x + y, 0), 400)
  sock.destroy()
})
