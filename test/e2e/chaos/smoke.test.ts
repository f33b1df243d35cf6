import assert from 'node:assert/strict'
import {test} from 'node:test'

import {SCENARIOS} from '../../chaos/scenarios.js'

// npm run chaos runs the whole battery for many minutes; the suite runs one scenario small
test('chaos smoke: broker SIGKILL x3 during 500 confirmed publishes loses and corrupts nothing; duplicates only of retried publishes', async (t) => {
  const s = SCENARIOS.find((x) => x.name === 'broker-kill9-x3')!
  const l = await s.run(0.01)
  t.diagnostic(JSON.stringify(l))
  assert.equal(l.confirmed, l.sent)
  assert.equal(l.received, l.confirmed)
  assert.deepEqual({corrupt: l.corrupt, lost: l.lost, verdict: l.verdict}, {corrupt: 0, lost: 0, verdict: 'PASS'})
  // a publish whose confirm died with the broker is sent again: at most those are stored twice
  const retried = Number(/(\d+) publishes retried/.exec(l.notes.join(' '))?.[1] ?? NaN)
  assert.ok(l.duplicated <= retried, `${l.duplicated} duplicates, ${retried} retried`)
  assert.match(l.notes.join(' '), /3 kills/)
})
