import assert from 'node:assert/strict'
import net from 'node:net'
import {test} from 'node:test'

import {BIG_WRITE, separateBigWrites} from '../../../src/lib/net/big-writes.js'

type Cb = (err?: Error | null) => void
type Chunk = {chunk: Buffer; encoding: BufferEncoding}

/** a socket stand-in that records what reaches its _write/_writev (what Node hands to the TLS layer) */
function recorder(async: boolean) {
  const calls: Buffer[][] = []
  const done = (cb: Cb) => (async ? setImmediate(cb) : cb())
  const s = {
    _write(chunk: Buffer, _enc: BufferEncoding, cb: Cb) {
      calls.push([chunk])
      done(cb)
    },
    _writev(chunks: Chunk[], cb: Cb) {
      calls.push(chunks.map((c) => c.chunk))
      done(cb)
    },
  }
  separateBigWrites(s as unknown as net.Socket)
  return {calls, s: s as unknown as {_writev: (c: Chunk[], cb: Cb) => void}}
}

const chunk = (n: number, v: number) => ({chunk: Buffer.alloc(n, v), encoding: 'buffer' as BufferEncoding})

for (const async of [false, true]) {
  test(`a writev's big chunks reach the socket alone, small runs stay joined, in order, one callback (${async ? 'async' : 'sync'} completions)`, async () => {
    const {calls, s} = recorder(async)
    const chunks = [chunk(10, 1), chunk(20, 2), chunk(BIG_WRITE, 3), chunk(1, 4), chunk(BIG_WRITE * 4, 5), chunk(BIG_WRITE + 1, 6), chunk(5, 7)]
    let called = 0
    await new Promise<void>((resolve, reject) =>
      s._writev(chunks, (err) => {
        called++
        if (err) reject(err)
        else resolve()
      }),
    )
    assert.equal(called, 1)
    assert.deepEqual(
      calls.map((c) => c.map((b) => [b.length, b[0]])),
      [[[10, 1], [20, 2]], [[BIG_WRITE, 3]], [[1, 4]], [[BIG_WRITE * 4, 5]], [[BIG_WRITE + 1, 6]], [[5, 7]]],
    )
  })
}

test('a writev of small chunks only is passed through as it is', () => {
  const {calls, s} = recorder(false)
  s._writev([chunk(10, 1), chunk(BIG_WRITE - 1, 2)], () => {})
  assert.equal(calls.length, 1)
  assert.equal(calls[0].length, 2)
})

test('an error of one write ends the writev with that error, and nothing after it is written', () => {
  const calls: number[] = []
  const s = {
    _write(chunk: Buffer, _e: BufferEncoding, cb: Cb) {
      calls.push(chunk.length)
      cb(new Error('EPIPE'))
    },
    _writev(chunks: Chunk[], cb: Cb) {
      calls.push(chunks.length)
      cb()
    },
  }
  separateBigWrites(s as unknown as net.Socket)
  let err: Error | null | undefined
  ;(s as unknown as {_writev: (c: Chunk[], cb: Cb) => void})._writev([chunk(BIG_WRITE, 1), chunk(3, 2), chunk(4, 3)], (e) => (err = e))
  assert.equal(err?.message, 'EPIPE')
  assert.deepEqual(calls, [BIG_WRITE])
})

test('a real socket: corked small and big writes arrive byte-exact and in order', async () => {
  const server = net.createServer()
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as net.AddressInfo).port
  const received = new Promise<Buffer>((resolve) =>
    server.once('connection', (s) => {
      const parts: Buffer[] = []
      s.on('data', (d: Buffer) => parts.push(d))
      s.on('end', () => resolve(Buffer.concat(parts)))
    }),
  )
  const c = net.connect(port, '127.0.0.1')
  await new Promise((r) => c.once('connect', r))
  separateBigWrites(c)
  const sent: Buffer[] = []
  for (let i = 0; i < 40; i++) {
    const size = i % 3 === 0 ? 300 * 1024 + i : i % 3 === 1 ? 17 : BIG_WRITE
    const b = Buffer.alloc(size)
    for (let j = 0; j < size; j++) b[j] = (i * 13 + j) & 0xff
    sent.push(b)
    if (i % 4 === 0) c.cork()
    c.write(b)
    if (i % 4 === 3) c.uncork()
  }
  c.uncork()
  c.end()
  const got = await received
  server.close()
  assert.ok(got.equals(Buffer.concat(sent)))
})
