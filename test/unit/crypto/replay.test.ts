import assert from 'node:assert/strict'
import {generateKeyPairSync} from 'node:crypto'
import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {after, describe, it} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {configSchema} from '../../../src/lib/config/schema.js'
import {EnvelopeSealer} from '../../../src/lib/crypto/envelope.js'
import {MessageReceiver} from '../../../src/lib/crypto/recv.js'
import {ReplayGuard, replayFileName} from '../../../src/lib/crypto/replay.js'
import type {MqError} from '../../../src/lib/errors.js'
import {tempHome} from '../../helpers/home.js'

describe('replay guard', () => {
  const h = tempHome()
  after(() => h.cleanup())
  const home = new MqHome(h.dir)

  it('remembers accepted ids per identity and sender across reopen', async () => {
    const g = await ReplayGuard.open(home, 'bob')
    assert.equal(await g.seen('m1', 'alice'), false)
    assert.equal(await g.record('m1', 'alice'), true)
    assert.equal(await g.record('m1', 'alice'), false)
    assert.equal(await g.seen('m1', 'carol'), false, 'ids are scoped by sender')
    await g.close()
    assert.ok(existsSync(join(home.data, replayFileName('bob'))))
    const again = await ReplayGuard.open(home, 'bob')
    assert.equal(await again.seen('m1', 'alice'), true)
    await again.close()
    const carol = await ReplayGuard.open(home, 'carol')
    assert.equal(await carol.seen('m1', 'alice'), false, 'each identity has its own record')
    await carol.close()
  })

  it('a batch begun and marked written is state 1 after reopen; one begun and not marked is in doubt (state 0); a later batch of the same id takes over', async () => {
    const g = await ReplayGuard.open(home, 'dora')
    const e = (id: string) => ({delivery: `q\u0000${id}`, messageId: id, sender: 'alice'})
    await g.begin([e('a1'), e('a2')], {offset: 10, path: '/tmp/out'})
    assert.equal((await g.lookup('a1', 'alice'))?.state, 0, 'being written')
    await g.markWritten([e('a1'), e('a2')])
    await g.begin([e('b1')])
    await g.close()
    const again = await ReplayGuard.open(home, 'dora')
    assert.deepEqual(await again.lookup('a2', 'alice'), {delivery: 'q\u0000a2', outOffset: 10, outPath: '/tmp/out', state: 1})
    assert.equal((await again.lookup('b1', 'alice'))?.state, 0, 'crashed while being written')
    // the redelivery of b1 is written in a new batch: its mark must cover b1 (batch numbers go on after a reopen)
    await again.begin([e('b1')])
    await again.markWritten([e('b1')])
    assert.equal((await again.lookup('b1', 'alice'))?.state, 1)
    // marked without begin (callers outside the receive loop): recorded as written too
    await again.markWritten([e('c1')])
    assert.equal((await again.lookup('c1', 'alice'))?.state, 1)
    await again.close()
  })

  it('maps odd identity names to a safe file name', () => {
    assert.equal(replayFileName('bob'), 'replay-bob.db')
    assert.match(replayFileName('../etc/passwd'), /^replay-[0-9a-f]{32}\.db$/)
  })
})

describe('replay window: bounded replay guard', () => {
  const h = tempHome()
  after(() => h.cleanup())
  const home = new MqHome(h.dir)
  const DAY = 86_400_000
  const enc = generateKeyPairSync('rsa', {modulusLength: 2048})
  const sig = generateKeyPairSync('rsa', {modulusLength: 2048})
  const t0 = Date.UTC(2026, 0, 1)
  /** one native envelope from alice to bob, sealed (signed timestamp) at `at` */
  const sealAt = (at: number, text: string) => ({
    body: new EnvelopeSealer({now: () => at, recipients: [{encPublicKey: enc.publicKey, name: 'bob'}], sender: {name: 'alice', signPrivateKey: sig.privateKey}}).seal(Buffer.from(text)).envelope,
    headers: {},
    messageId: text,
  })
  const receiver = (replay: ReplayGuard) => new MessageReceiver({accept: ['native', 'plain'], identity: {encPrivateKey: enc.privateKey, name: 'bob'}, replay, resolveSender: async () => sig.publicKey})

  it('defaults to 30 days, from e2e.replay_window_ms', () => {
    assert.equal(configSchema.parse({}).e2e.replay_window_ms, 30 * DAY)
  })

  it('refuses a message signed before the window with a clear reason, accepts one inside it', async () => {
    let now = t0
    const g = await ReplayGuard.open(home, 'window-old', {now: () => now, windowMs: 30 * DAY})
    try {
      now = t0 + 31 * DAY
      await assert.rejects(receiver(g).open(sealAt(t0, 'too old')), (e: MqError) => {
        assert.equal(e.code, 'E_REPLAY_WINDOW')
        assert.match(e.message, /older than the replay window/)
        assert.match(e.message, /31 days/)
        assert.match(e.hint ?? '', /e2e\.replay_window_ms/)
        return true
      })
      const ok = await receiver(g).open(sealAt(t0 + 2 * DAY, 'recent enough'))
      assert.equal(ok.payload.toString(), 'recent enough')
    } finally {
      await g.close()
    }
  })

  it('prunes ids older than the window (on open and as it records), and refuses a replay inside and after it', async () => {
    let now = t0
    const clock = () => now
    let g = await ReplayGuard.open(home, 'window-prune', {now: clock, windowMs: 30 * DAY})
    const msg = sealAt(t0, 'once')
    const rx = receiver(g)
    const first = await rx.open(msg)
    rx.accepted(first, msg)
    await rx.commit()
    // an id recorded with an old signed timestamp, and an unsigned one recorded at acceptance time
    await g.recordMany([{messageId: 'older', sender: 'alice', timestamp: t0 - 20 * DAY}, {messageId: 'plain-1', sender: null}])
    assert.equal(await g.count(), 3)
    // inside the window: a replay is refused as a replay
    now = t0 + 20 * DAY
    await assert.rejects(receiver(g).open(msg), (e: MqError) => e.code === 'E_REPLAY')
    assert.equal(await g.prune(), 1, 'only the id signed 20 days before t0 is past the window')
    assert.equal(await g.seen('older', 'alice'), false)
    assert.equal(await g.seen(first.message_id, 'alice'), true)
    await g.close()
    // past the window: reopening prunes everything; the replay is still refused, by its timestamp
    now = t0 + 31 * DAY
    g = await ReplayGuard.open(home, 'window-prune', {now: clock, windowMs: 30 * DAY})
    assert.equal(await g.count(), 0)
    await assert.rejects(receiver(g).open(msg), (e: MqError) => e.code === 'E_REPLAY_WINDOW')
    await g.close()
  })

  it('refuses a replayed MQE2 reference (the grant known from the database) and prunes grants past the window', async () => {
    let now = t0
    const g = await ReplayGuard.open(home, 'window-ref', {now: () => now, windowMs: 30 * DAY})
    try {
      const s = new EnvelopeSealer({grantEvery: 1000, now: () => now, recipients: [{encPublicKey: enc.publicKey, name: 'bob'}], sender: {name: 'alice', signPrivateKey: sig.privateKey}})
      const withGrant = {body: s.seal(Buffer.from('grant')).envelope, headers: {}, messageId: 'g'}
      const ref = {body: s.seal(Buffer.from('ref')).envelope, headers: {}, messageId: 'r'}
      const rx = receiver(g)
      for (const d of [withGrant, ref]) rx.accepted(await rx.open(d), d)
      await rx.begin()
      await rx.commit()
      // a new receiver (restart) knows the grant from the database, and still refuses the reference's replay
      await assert.rejects(receiver(g).open(ref), (e: MqError) => e.code === 'E_REPLAY')
      now = t0 + 31 * DAY
      await g.prune()
      assert.equal(g.getGrant(Buffer.alloc(32)), undefined)
      await assert.rejects(receiver(g).open(ref), (e: MqError) => e.code === 'E_GRANT_UNKNOWN')
    } finally {
      await g.close()
    }
  })

  it('keeps the file bounded under a steady stream', async () => {
    let now = t0
    const g = await ReplayGuard.open(home, 'window-steady', {now: () => now, windowMs: 2 * DAY})
    try {
      for (let day = 0; day < 10; day++) {
        now = t0 + day * DAY
        await g.recordMany(Array.from({length: 50}, (_, i) => ({messageId: `d${day}-${i}`, sender: 'alice', timestamp: now})))
      }
      // recordMany prunes as it goes: at most the last window's worth (plus the current day) remains
      assert.ok((await g.count()) <= 150, `count ${await g.count()}`)
      assert.equal(await g.seen('d0-0', 'alice'), false)
      assert.equal(await g.seen('d9-49', 'alice'), true)
    } finally {
      await g.close()
    }
  })
})
