import assert from 'node:assert/strict'
import {test} from 'node:test'

import {type BenchResult, medianRun} from '../../../src/lib/client/bench.js'

const run = (msgsPerSec: number, confirmP99?: number, rate?: number): BenchResult => ({
  confirmMs: confirmP99 === undefined ? undefined : {p50: 0, p99: confirmP99},
  latencyMs: {max: 0, p50: 0, p99: 0},
  mbPerSec: 0,
  messages: 1,
  mode: 'durable',
  msgsPerSec,
  rate,
  seconds: 1,
  size: 256,
  target: 'mq',
})

test('the reported run of repeated ones is the median: by throughput, or by p99 confirm when paced', () => {
  assert.equal(medianRun([]), undefined)
  assert.equal(medianRun([run(300), run(100), run(200)])?.msgsPerSec, 200)
  // an even count takes the lower middle: never the luckier of two
  assert.equal(medianRun([run(400), run(100)])?.msgsPerSec, 100)
  const paced = medianRun([run(5000, 9, 5000), run(5000, 2, 5000), run(5000, 4, 5000), run(5000, 3, 5000)])
  assert.equal(paced?.confirmMs?.p99, 4)
})
