import assert from 'node:assert/strict'
import {describe, test} from 'node:test'

import {randomChunk} from '../../../src/lib/util/random.js'

describe('randomChunk (pooled CSPRNG bytes)', () => {
  test('hands out every byte once: chunks across several blocks are distinct and keep their bytes', () => {
    const chunks = Array.from({length: 5000}, () => randomChunk(12))
    const copies = chunks.map((c) => Buffer.from(c))
    // later draws (new blocks) never overwrite what was handed out before
    for (let i = 0; i < 5000; i++) randomChunk(12)
    for (const [i, c] of chunks.entries()) assert.ok(c.equals(copies[i]), `chunk ${i} changed`)
    assert.equal(new Set(copies.map((c) => c.toString('hex'))).size, copies.length)
    assert.ok(chunks.every((c) => c.length === 12))
  })

  test('large requests are served whole', () => {
    assert.equal(randomChunk(64 * 1024).length, 64 * 1024)
  })
})
