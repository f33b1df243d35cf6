import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {test} from 'node:test'

import {Engine} from '../../../src/lib/broker/engine.js'
import {HeapGrowthGovernor} from '../../../src/lib/broker/memory.js'

const MEMORY_JS = new URL('../../../src/lib/broker/memory.js', import.meta.url).href

/**
 * A broker-like heap in a child process (V8 flags are per process): some state that stays alive, and
 * a FIFO window of messages that live long enough to be promoted and then die, as a draining backlog
 * does. Returns the full (mark-compact) collections it took: a heap allowed to grow less past its
 * live size collects sooner, so more often.
 */
function fullCollections(percent: number): number {
  const script = `
    import {PerformanceObserver, constants} from 'node:perf_hooks'
    const {limitHeapGrowth} = await import(${JSON.stringify(MEMORY_JS)})
    limitHeapGrowth(${percent})
    let major = 0
    new PerformanceObserver((l) => { for (const e of l.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) major++ }).observe({entryTypes: ['gc']})
    const live = Array.from({length: 200_000}, (_, i) => ({id: 'live-' + i, n: i}))
    const ring = new Array(100_000)
    for (let i = 0; i < 3_000_000; i++) ring[i % 100_000] = {id: 'message-' + i, seq: i, headers: {k: String(i)}}
    await new Promise((r) => setTimeout(r, 100))
    console.log(major, live.length)
  `
  return Number(execFileSync(process.execPath, ['--input-type=module', '-e', script], {encoding: 'utf8'}).split(' ')[0])
}

test("limitHeapGrowth takes effect after start: the old generation is collected before it grows far past its live size (the broker's default, 25 %)", () => {
  const own = fullCollections(0)
  const limited = fullCollections(25)
  assert.ok(limited >= 2 * own && limited - own >= 3, `full collections: ${limited} with 25 %, ${own} with V8's own factor`)
})

test('heap growth is capped only while the broker is big: above heap_growing_above, released below 85 % of it', () => {
  let rss = 100
  const applied: number[] = []
  const g = new HeapGrowthGovernor(25, 160, () => rss, (p) => applied.push(p))
  g.check()
  assert.deepEqual([...applied], [], 'small: V8 keeps its own factor')
  rss = 170
  g.check()
  assert.deepEqual([...applied], [25])
  rss = 150
  g.check()
  assert.deepEqual([...applied], [25], 'hysteresis: still capped between 85 % and 100 %')
  rss = 130
  g.check()
  assert.deepEqual([...applied], [25, 0], 'released (0 = V8 factor) once well below')
  const always = new HeapGrowthGovernor(25, 0, () => 1, (p) => applied.push(p))
  always.check()
  assert.deepEqual([...applied], [25, 0, 25], 'heap_growing_above 0: always capped')
})

test('heap growth is capped only while the broker also holds a backlog: a big but merely busy broker keeps V8 factor', () => {
  const applied: number[] = []
  let backlog = false
  const g = new HeapGrowthGovernor(25, 160, () => 200, (p) => applied.push(p))
  g.backlog = () => backlog
  g.check()
  assert.deepEqual([...applied], [], 'above heap_growing_above without a backlog: not capped')
  backlog = true
  g.check()
  assert.deepEqual([...applied], [25], 'a backlog and a big RSS: capped')
  backlog = false
  g.check()
  assert.deepEqual([...applied], [25, 0], 'the backlog drained: released')
})

test('holdsBacklog counts ready messages of every queue, in memory and paged out; delivered ones are not ready', () => {
  const e = new Engine()
  e.declareQueue('b1')
  e.declareQueue('b2')
  for (let i = 0; i < 6; i++) e.publish('', 'b1', Buffer.from('x'))
  for (let i = 0; i < 4; i++) e.publish('', 'b2', Buffer.from('y'))
  assert.equal(e.holdsBacklog(10), true)
  assert.equal(e.holdsBacklog(11), false)
  const s = e.openSession('c', {deliver: () => {}, writable: () => true})
  e.get(s, 'b1')
  assert.equal(e.holdsBacklog(10), false)
})
