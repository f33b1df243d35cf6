import assert from 'node:assert/strict'
import {test} from 'node:test'

import {PARSERS, fuzz} from '../../fuzz/engine.js'

// npm run fuzz runs a million inputs per parser; the suite runs a short, fixed-seed slice of each
for (const parser of PARSERS) {
  test(`fuzz smoke: ${parser}, 2,000 inputs, no crash, hang or memory failure`, async () => {
    const r = await fuzz({parser, runs: 2000, seed: 18, timeoutMs: 5000})
    assert.equal(r.inputs, 2000)
    assert.deepEqual(r.findings, [], JSON.stringify(r.findings, null, 2))
    assert.equal(r.verdict, 'PASS')
  })
}

// A harness runs many inputs without real I/O; the worker must still let the timers that servers
// leave per connection fire, or every connection stays in memory (ciphermq grew ~4 MB per 1,000 inputs).
test('fuzz memory stays bounded: ciphermq, 20,000 inputs under a 48 MB heap', async () => {
  const r = await fuzz({memoryMb: 48, parser: 'ciphermq', runs: 20_000, seed: 18, timeoutMs: 5000})
  assert.deepEqual(r.findings, [], JSON.stringify(r.findings, null, 2))
  assert.equal(r.memory_failures, 0)
  assert.ok(r.peak_heap_mb < 40, `peak heap ${r.peak_heap_mb} MB`)
})
