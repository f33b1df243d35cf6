import assert from 'node:assert/strict'
import {test} from 'node:test'

import {type Frame, FrameError, FrameParser, encodeFrame} from '../../../src/lib/wire/protocol.js'

function parseAll(p: FrameParser, chunks: Buffer[]): {frames: Frame[]; errors: FrameError[]} {
  const frames: Frame[] = []
  const errors: FrameError[] = []
  for (const c of chunks) p.push(c, (f) => frames.push(f), (e) => errors.push(e))
  return {errors, frames}
}

test('frames round-trip byte by byte, binary bodies and odd names included', () => {
  const body = Buffer.from([0, 10, 13, 255, 32, 10])
  const wire = Buffer.concat([encodeFrame('PUBLISH', 7, {exchange: 'a b=c\n', key: 'k.#', 'h.x': 'é'}, body), encodeFrame('PING', 0)])
  const chunks = [...wire].map((b) => Buffer.from([b]))
  const {frames} = parseAll(new FrameParser(1024), chunks)
  assert.equal(frames.length, 2)
  assert.equal(frames[0].verb, 'PUBLISH')
  assert.equal(frames[0].id, 7)
  assert.deepEqual(frames[0].args, {exchange: 'a b=c\n', key: 'k.#', 'h.x': 'é'})
  assert.deepEqual(frames[0].body, body)
  assert.equal(frames[1].verb, 'PING')
})

test('hand-typed frames: lowercase verb, CRLF, blank lines, omitted length', () => {
  const {frames} = parseAll(new FrameParser(1024), [Buffer.from('\r\ndeclare_queue 1 name=orders durable=1\r\npublish 2 exchange= key=orders 5\r\nhello\r\n')])
  assert.equal(frames.length, 2)
  assert.equal(frames[0].verb, 'DECLARE_QUEUE')
  assert.equal(frames[1].body.toString(), 'hello')
})

test('oversized body is refused from the header, before buffering', () => {
  const p = new FrameParser(1024)
  assert.throws(
    () => parseAll(p, [Buffer.from('PUBLISH 3 exchange=x key=y 2048\n')]),
    (e: unknown) => e instanceof FrameError && e.code === 'E_FRAME_TOO_LARGE' && e.fatal && e.id === 3,
  )
})

test('garbage is a fatal malformed frame; bad percent-encoding is not', () => {
  assert.throws(() => parseAll(new FrameParser(1024), [Buffer.from('\u0000\u0001garbage!!\n')]), (e: unknown) => e instanceof FrameError && e.fatal)
  assert.throws(() => parseAll(new FrameParser(1024), [Buffer.alloc(70 * 1024, 65)]), (e: unknown) => e instanceof FrameError && e.fatal)
  const {errors, frames} = parseAll(new FrameParser(1024), [Buffer.from('PUBLISH 4 exchange=%zz key=a 3\nabcPING 5\n')])
  assert.equal(errors.length, 1)
  assert.equal(errors[0].id, 4)
  assert.equal(frames.length, 1)
  assert.equal(frames[0].verb, 'PING')
})

test('a big body arriving in socket-sized chunks is kept as those chunks and joined once, into shared memory (sharedBodies, the broker); small bodies stay on the heap', () => {
  const p = new FrameParser(16 * 1024 * 1024, {sharedBodies: true})
  const body = Buffer.alloc(1024 * 1024 + 5)
  for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff
  const wire = Buffer.concat([encodeFrame('PUBLISH', 1, {key: 'k'}, body), encodeFrame('PUBLISH', 2, {key: 'k'}, Buffer.from('small'))])
  const frames: Frame[] = []
  // each chunk in its own exact buffer, as a TLS socket hands them over (16 KiB records)
  for (let off = 0; off < wire.length; off += 16 * 1024) {
    p.push(Buffer.from(wire.subarray(off, off + 16 * 1024)), (f) => frames.push(f), (e) => assert.fail(e))
    if (p.bodyPending > 0) assert.ok(p.bodyAllocated <= Math.max(64 * 1024, 2 * (off + 16 * 1024)), `allocated ${p.bodyAllocated} after ${off} bytes`)
  }
  assert.equal(frames.length, 2)
  assert.ok(frames[0].body.equals(body))
  assert.ok(frames[0].body.buffer instanceof SharedArrayBuffer, 'a big body is in shared memory (the store thread reads it in place)')
  assert.equal(frames[0].body.byteOffset, 0)
  assert.equal(frames[1].body.toString(), 'small')
  assert.ok(!(frames[1].body.buffer instanceof SharedArrayBuffer))
  assert.equal(p.partial, false)
})

test('sharedBodies: a body of exactly 64 KiB (one buffer, filled piece by piece) lands byte-exact in shared memory', () => {
  const p = new FrameParser(1024 * 1024, {sharedBodies: true})
  const body = Buffer.from(Array.from({length: 64 * 1024}, (_, i) => (i * 29 + 3) & 0xff))
  const wire = encodeFrame('PUBLISH', 3, {key: 'k'}, body)
  const frames: Frame[] = []
  for (let off = 0; off < wire.length; off += 1000) p.push(wire.subarray(off, off + 1000), (f) => frames.push(f), (e) => assert.fail(e))
  assert.equal(frames.length, 1)
  assert.ok(frames[0].body.buffer instanceof SharedArrayBuffer)
  assert.ok(frames[0].body.equals(body))
})

test('without sharedBodies (a client) big bodies are joined on the ordinary heap, at 64 KiB and above', () => {
  const p = new FrameParser(16 * 1024 * 1024)
  const bodies = [64 * 1024, 300 * 1024 + 3].map((n) => Buffer.from(Array.from({length: n}, (_, i) => (i * 13) & 0xff)))
  const wire = Buffer.concat(bodies.map((b, k) => encodeFrame('DELIVER', k, {tag: k + 1}, b)))
  const frames: Frame[] = []
  for (let off = 0; off < wire.length; off += 16 * 1024) p.push(Buffer.from(wire.subarray(off, off + 16 * 1024)), (f) => frames.push(f), (e) => assert.fail(e))
  assert.equal(frames.length, 2)
  frames.forEach((f, k) => {
    assert.ok(f.body.equals(bodies[k]))
    assert.ok(!(f.body.buffer instanceof SharedArrayBuffer))
  })
})

test('big bodies in random chunkings (own buffers and views of a bigger one, tiny to large) reassemble exactly, within the memory bound', () => {
  let seed = 12345
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  for (let round = 0; round < 20; round++) {
    const p = new FrameParser(1024 * 1024)
    const sizes = [64 * 1024 + 1 + rnd(200_000), rnd(100), 64 * 1024 + rnd(3)]
    const bodies = sizes.map((n, k) => Buffer.from(Array.from({length: n}, (_, i) => (i * (k + 3) + round) & 0xff)))
    const wire = Buffer.concat(bodies.map((b, k) => encodeFrame('PUBLISH', k + 1, {key: 'k'}, b)))
    const frames: Frame[] = []
    for (let off = 0; off < wire.length; ) {
      const n = 1 + (rnd(4) === 0 ? rnd(8) : rnd(40_000))
      const piece = wire.subarray(off, off + n)
      p.push(rnd(2) === 0 ? Buffer.from(piece) : piece, (f) => frames.push(f), (e) => assert.fail(e))
      off += n
      if (p.bodyPending > 0) assert.ok(p.bodyAllocated <= Math.max(64 * 1024, 2 * off) + 64 * 1024, `allocated ${p.bodyAllocated} after ${off} bytes`)
    }
    assert.equal(frames.length, 3)
    frames.forEach((f, k) => assert.ok(f.body.equals(bodies[k]), `round ${round} body ${k}`))
  }
})

test('a claimed body is buffered as its bytes arrive, not at the claimed size, and reassembles exactly', () => {
  const p = new FrameParser(16 * 1024 * 1024)
  const body = Buffer.alloc(3 * 1024 * 1024 + 17)
  for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff
  const wire = encodeFrame('PUBLISH', 7, {key: 'k'}, body)
  const head = wire.indexOf(0x0a) + 1
  const frames: Frame[] = []
  // header plus ten body bytes: far less than the announced 3 MiB is allocated
  p.push(wire.subarray(0, head + 10), (f) => frames.push(f), (e) => assert.fail(e))
  assert.equal(p.bodyPending, body.length)
  assert.ok(p.bodyAllocated <= 64 * 1024, `allocated ${p.bodyAllocated}`)
  // the rest in uneven chunks: the buffer grows, at most twice what has arrived
  let off = head + 10
  for (const n of [1, 4095, 70_000, 1 << 20, 5, 333_333]) {
    p.push(wire.subarray(off, off + n), (f) => frames.push(f), (e) => assert.fail(e))
    off += n
    assert.ok(p.bodyAllocated <= Math.max(64 * 1024, 2 * (off - head)), `allocated ${p.bodyAllocated} after ${off - head} bytes`)
  }
  p.push(wire.subarray(off), (f) => frames.push(f), (e) => assert.fail(e))
  assert.equal(frames.length, 1)
  assert.equal(frames[0].verb, 'PUBLISH')
  assert.ok(frames[0].body.equals(body))
  assert.equal(p.partial, false)
})

test('wholeBodies (a client): a body gets its buffer at its header and keeps no view of a chunk, so the reader may reuse its read buffer', () => {
  const p = new FrameParser(16 * 1024 * 1024, {wholeBodies: true})
  const body = Buffer.alloc(1024 * 1024 + 5)
  for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff
  const wire = Buffer.concat([encodeFrame('DELIVER', 0, {consumer: 'c'}, body), encodeFrame('PING', 1), encodeFrame('DELIVER', 0, {consumer: 'c'}, Buffer.from('small'))])
  const frames: Frame[] = []
  // one reused 16 KiB read buffer (tls.connect's onread), overwritten after every push
  const read = Buffer.alloc(16 * 1024)
  for (let off = 0; off < wire.length; off += read.length) {
    const n = wire.copy(read, 0, off, off + read.length)
    p.push(read.subarray(0, n), (f) => frames.push(f), (e) => assert.fail(e))
    if (p.bodyPending > 0) assert.equal(p.bodyAllocated, body.length)
    read.fill(0xee)
  }
  assert.deepEqual(frames.map((f) => f.verb), ['DELIVER', 'PING', 'DELIVER'])
  assert.ok(frames[0].body.equals(body), 'the big body survived its read buffer being reused')
  assert.equal(frames[0].body.buffer instanceof SharedArrayBuffer, false)
  assert.equal(frames[2].body.toString(), 'small')
})
