import assert from 'node:assert/strict'
import {describe, test} from 'node:test'

import {Window} from '../../../src/lib/util/window.js'

const turn = () => new Promise<void>((r) => setImmediate(r))

describe('Window (operations in flight)', () => {
  test('never lets more than size in flight, and wakes every waiter in order', async () => {
    const w = new Window(3)
    const started: number[] = []
    const finish: Array<() => void> = []
    let peak = 0
    const loops = [0, 1].map(async (loop) => {
      for (let i = 0; i < 10; i++) {
        await w.acquire()
        peak = Math.max(peak, w.pending)
        started.push(loop * 100 + i)
        new Promise<void>((r) => finish.push(r)).then(w.release)
      }
    })
    // two loops wait on the same window: a single wake slot would strand one of them
    while (started.length < 20) {
      await turn()
      finish.shift()?.()
    }
    while (finish.length > 0) finish.shift()?.()
    await Promise.all(loops)
    await w.idle()
    assert.equal(peak, 3)
    assert.equal(w.pending, 0)
    assert.equal(started.length, 20)
  })

  test('idle waits for the last release; release without acquire is a bug, not a silent miscount', async () => {
    const w = new Window(2)
    await w.acquire()
    let idle = false
    const p = w.idle().then(() => (idle = true))
    await turn()
    assert.equal(idle, false)
    w.release()
    await p
    assert.equal(idle, true)
    assert.throws(() => w.release(), /without a matching acquire/)
    assert.throws(() => new Window(0), /positive integer/)
  })
})
