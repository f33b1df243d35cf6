import assert from 'node:assert/strict'
import {readFileSync, statSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'

import {RelayCounters} from '../../../src/lib/relay/counters.js'
import {tempHome} from '../../helpers/home.js'

const peer = (n: number) => n.toString(16).padStart(32, 'a')

test('relay counters: each counter from a peer is accepted once; the window and the peer list are bounded', async () => {
  const h = tempHome()
  try {
    const dir = join(h.dir, 'relay')
    const c = new RelayCounters(dir, {peers: 3, recent: 4})
    assert.equal(c.check(peer(1), 10n), 'new')
    assert.equal(await c.accept(peer(1), 10n), 'new')
    assert.equal(await c.accept(peer(1), 10n), 'replay')
    assert.equal(c.check(peer(1), 10n), 'replay')
    // another peer's counters are its own
    assert.equal(await c.accept(peer(2), 10n), 'new')
    // out of order within the window is fine
    for (const n of [14n, 12n, 11n, 13n]) assert.equal(await c.accept(peer(1), n), 'new', String(n))
    // 5 accepted, window of 4: 10 fell out and is now below the floor
    assert.equal(await c.accept(peer(1), 10n), 'too_old')
    assert.equal(await c.accept(peer(1), 9n), 'too_old')
    const state = JSON.parse(readFileSync(c.file, 'utf8')) as {received: Record<string, {floor: string; recent: string[]}>}
    assert.deepEqual(state.received[peer(1)], {floor: '10', recent: ['11', '12', '13', '14']})
    assert.equal(statSync(c.file).mode & 0o777, 0o600)
    // a fourth peer drops the least recently heard from (peer 2), not peer 1 who wrote last
    await c.accept(peer(3), 1n)
    await c.accept(peer(1), 15n)
    await c.accept(peer(4), 1n)
    assert.deepEqual(Object.keys(JSON.parse(readFileSync(c.file, 'utf8')).received), [peer(3), peer(1), peer(4)])
    // state is on disk: a new object (a new process) refuses the same counters
    assert.equal(new RelayCounters(dir).check(peer(1), 15n), 'replay')
  } finally {
    h.cleanup()
  }
})

test('relay counters: concurrent sends never share a counter, and counters only grow', async () => {
  const h = tempHome()
  try {
    const dir = join(h.dir, 'relay')
    const a = new RelayCounters(dir)
    const b = new RelayCounters(dir)
    const got = await Promise.all(Array.from({length: 40}, (_, i) => (i % 2 ? a : b).next(peer(7))))
    assert.equal(new Set(got).size, 40)
    const before = BigInt(Date.now()) * 1000n
    assert.ok(got.every((n) => n <= before + 1_000_000n && n > before - 60_000_000n), 'clock-based: microseconds')
    const last = got.reduce((x, y) => (x > y ? x : y))
    assert.ok((await a.next(peer(7))) > last)
  } finally {
    h.cleanup()
  }
})
