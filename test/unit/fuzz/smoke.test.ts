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
