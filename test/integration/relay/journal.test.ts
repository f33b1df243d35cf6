import assert from 'node:assert/strict'
import type {ChildProcess} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {describe, test} from 'node:test'

import Database from 'better-sqlite3'

import {decodeRecords, encodeRecord} from '../../../src/lib/relay/journal.js'
import {Op, PULL_ENTRY_HEADER_BYTES, decodePullEntryHeader, encodeSendHeader} from '../../../src/lib/relay/protocol.js'
import {RelayStore} from '../../../src/lib/relay/store.js'
import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {RawClient, type RawResponse, childRelay, registerRaw, req, startRelay} from './harness.js'

/**
 * The relay's journal (src/lib/relay/journal.ts): acknowledged messages are appended to
 * data/relay.jnl before their ack and moved into relay_messages later. Nothing acknowledged may be
 * lost or delivered twice because of it, whatever happens between the two.
 */

/** held in the journal alone for the whole test: no timed flush */
const HOLD = {flushMs: 3_600_000}

async function kill(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  proc.kill('SIGKILL')
  await new Promise((r) => proc.once('exit', r))
}

const send = (from: Buffer, to: Buffer, type: number, body: Buffer, version: 2 | 3 = 3): Buffer => req(version, from, Op.send, Buffer.concat([encodeSendHeader(to, type, body.length), body]))

function entries(r: RawResponse): {id: number; type: number; body: Buffer}[] {
  const out = []
  for (let at = 0; at < r.payload.length; ) {
    const e = decodePullEntryHeader(r.payload.subarray(at, at + PULL_ENTRY_HEADER_BYTES))
    at += PULL_ENTRY_HEADER_BYTES
    out.push({body: Buffer.from(r.payload.subarray(at, at + e.size)), id: e.messageId, type: e.type})
    at += e.size
  }
  return out
}

async function pull(port: number, who: Buffer): Promise<{id: number; type: number; body: Buffer}[]> {
  const c = await RawClient.connect(port)
  try {
    c.write(req(3, who, Op.pull))
    const r = await c.response()
    assert.equal(r.code, 2104)
    return entries(r)
  } finally {
    c.close()
  }
}

/** rows in relay.db itself, read beside whoever holds the journal */
function rowsInDb(home: string): number {
  const db = new Database(join(home, 'data', 'relay.db'), {readonly: true})
  try {
    return (db.prepare('SELECT COUNT(*) AS n FROM relay_messages').get() as {n: number}).n
  } finally {
    db.close()
  }
}

describe('relay journal', () => {
  test('texts acknowledged, then the relay killed with SIGKILL before any flush: each delivered after the restart, exactly once', async () => {
    const home = tempHome('mq-relay-jnl-kill-')
    const child = await childRelay(home.dir, HOLD)
    let relay: Awaited<ReturnType<typeof startRelay>> | undefined
    try {
      const c = await RawClient.connect(child.port)
      const alice = await registerRaw(c, 3, 'j-alice')
      const bob = await registerRaw(c, 3, 'j-bob')
      const sent = new Map<number, Buffer>()
      for (let i = 0; i < 50; i++) {
        const t = randomBytes(40 + i)
        c.write(send(alice, bob, 3, t))
        const r = await c.response()
        assert.equal(r.code, 2103)
        sent.set(r.payload.readUInt32LE(16), t)
      }
      const burst = Array.from({length: 20}, (_, i) => randomBytes(100 + i))
      c.write(Buffer.concat(burst.map((t) => send(alice, bob, 3, t))))
      for (const t of burst) sent.set((await c.response()).payload.readUInt32LE(16), t)
      c.close()
      // acknowledged, and so far only in the journal
      assert.equal(rowsInDb(home.dir), 0)
      assert.equal(decodeRecords(readFileSync(join(home.dir, 'data', 'relay.jnl'))).records.length, 70)

      await kill(child.proc)
      relay = await startRelay({home: home.dir, journal: HOLD})
      assert.equal(relay.store.recovery.replayed, 70)
      const got = await pull(relay.port, bob)
      assert.deepEqual(new Map(got.map((e) => [e.id, e.body])), sent)
      assert.deepEqual(got.map((e) => e.id), [...sent.keys()], 'in the order they were acknowledged')
      assert.deepEqual(await pull(relay.port, bob), [], 'pulled once')
      // a crash now, then a restart: the journal still holds the records, the watermark skips them
      await relay.stop()
      relay = await startRelay({home: home.dir, journal: HOLD})
      assert.equal(relay.store.recovery.replayed, 0)
      assert.deepEqual(await pull(relay.port, bob), [], 'never delivered a second time')
      // new ids come after every id handed out before
      const c2 = await RawClient.connect(relay.port)
      c2.write(send(alice, bob, 3, Buffer.from('later')))
      const later = (await c2.response()).payload.readUInt32LE(16)
      c2.close()
      assert.ok(later > Math.max(...sent.keys()))
    } finally {
      await kill(child.proc)
      await relay?.stop()
      home.cleanup()
    }
  })

  test('a torn last record is ignored, the records before it kept, and appends after it readable', async () => {
    const home = tempHome('mq-relay-jnl-torn-')
    let child = await childRelay(home.dir, HOLD)
    let relay: Awaited<ReturnType<typeof startRelay>> | undefined
    try {
      const c = await RawClient.connect(child.port)
      const alice = await registerRaw(c, 3, 't-alice')
      const bob = await registerRaw(c, 3, 't-bob')
      const kept: Buffer[] = []
      for (let i = 0; i < 3; i++) {
        kept.push(randomBytes(64))
        c.write(send(alice, bob, 3, kept[i]))
        assert.equal((await c.response()).code, 2103)
      }
      c.close()
      await kill(child.proc)
      // what a crash mid-write leaves: the start of a fourth record (its length says more follows)
      const file = join(home.dir, 'data', 'relay.jnl')
      const body = randomBytes(64)
      const whole = Buffer.concat(encodeRecord({body, createdMs: Date.now(), file: null, from: alice, id: 999_999, size: 64, to: bob, type: 3}))
      appendFileSync(file, whole.subarray(0, whole.length - 10))
      const tornAt = statSync(file).size - (whole.length - 10)

      child = await childRelay(home.dir, HOLD)
      const c2 = await RawClient.connect(child.port)
      const after = randomBytes(64)
      c2.write(send(alice, bob, 3, after))
      assert.equal((await c2.response()).code, 2103)
      c2.close()
      await kill(child.proc)
      // the torn bytes were cut off at the restart: the new record follows the three whole ones
      assert.equal(decodeRecords(readFileSync(file)).records.length, 4)
      assert.equal(statSync(file).size > tornAt, true)

      relay = await startRelay({home: home.dir, journal: HOLD})
      assert.deepEqual((await pull(relay.port, bob)).map((e) => e.body), [...kept, after])
      await relay.stop()
      relay = undefined

      // a whole-length record whose bytes do not check (garbage, zeros) is not a message either
      const store = await RelayStore.open({dataDir: join(home.dir, 'data'), journal: HOLD, url: 'sqlite'})
      await store.close()
      const bad = Buffer.from(whole)
      bad[bad.length - 1] ^= 0xff
      appendFileSync(file, Buffer.concat([bad, Buffer.alloc(4096)]))
      const again = await RelayStore.open({dataDir: join(home.dir, 'data'), journal: HOLD, url: 'sqlite'})
      try {
        assert.equal(again.recovery.replayed, 0)
        assert.equal(again.recovery.torn.length, 1)
        assert.equal(again.recovery.torn[0].bytes, bad.length + 4096)
        assert.deepEqual(await again.pending(bob), [])
      } finally {
        await again.close()
      }
    } finally {
      await kill(child.proc)
      await relay?.stop()
      home.cleanup()
    }
  })

  test('a damaged record in the middle (CRC fails, whole records after it): the file is kept for the operator, not cut and lost', async () => {
    const home = tempHome('mq-relay-jnl-damage-')
    const dataDir = join(home.dir, 'data')
    const to = randomBytes(16)
    const from = randomBytes(16)
    const bodies = [randomBytes(100), randomBytes(200), randomBytes(300)]
    let store = await RelayStore.open({dataDir, journal: HOLD, url: 'sqlite'})
    await store.close()
    // what a relay killed before any flush leaves, then one bit of the second record's body flipped on disk
    const ids = [1, 2, 3]
    const records = bodies.map((body, i) => Buffer.concat(encodeRecord({body, createdMs: Date.now(), file: null, from, id: ids[i], size: body.length, to, type: 3})))
    const damaged = Buffer.concat(records)
    damaged[records[0].length + 8 + 55 + 100] ^= 0x01
    const file = join(dataDir, 'relay.jnl')
    writeFileSync(file, damaged)
    store = await RelayStore.open({dataDir, journal: HOLD, url: 'sqlite'})
    try {
      assert.equal(store.recovery.replayed, 1)
      assert.equal(store.recovery.torn.length, 1)
      const kept = store.recovery.torn[0].keptAt
      assert.ok(kept !== undefined && existsSync(kept), 'a copy of the damaged file is kept')
      assert.equal(statSync(kept).mode & 0o777, 0o600)
      assert.ok(readFileSync(kept).equals(damaged), 'byte for byte: the third record is still there')
      assert.deepEqual((await store.pending(to)).map((m) => m.id), [ids[0]])
    } finally {
      await store.close()
    }
    // the next start reads the current file only (cut back), not the copy
    store = await RelayStore.open({dataDir, journal: HOLD, url: 'sqlite'})
    try {
      assert.deepEqual(store.recovery, {replayed: 0, torn: []})
    } finally {
      await store.close()
      home.cleanup()
    }
  })

  test('pull order is arrival order across texts, key requests, keys, v2 texts and files', async () => {
    const home = tempHome('mq-relay-jnl-order-')
    const relay = await startRelay({home: home.dir, journal: HOLD})
    try {
      const c = await RawClient.connect(relay.port)
      const a3 = await registerRaw(c, 3, 'o-a3')
      const b3 = await registerRaw(c, 3, 'o-b3')
      const plan: {type: number; body: Buffer; version: 2 | 3}[] = [
        {body: Buffer.from('text 1'), type: 3, version: 3},
        {body: Buffer.alloc(0), type: 1, version: 3},
        {body: randomBytes(100 * 1024), type: 4, version: 3},
        {body: Buffer.from('text 2'), type: 3, version: 3},
        {body: randomBytes(300), type: 2, version: 3},
        {body: randomBytes(70 * 1024), type: 3, version: 3},
        {body: Buffer.from('text 3'), type: 3, version: 3},
      ]
      const acked: number[] = []
      for (const m of plan) {
        c.write(send(a3, b3, m.type, m.body, m.version))
        const r = await c.response()
        assert.equal(r.code, 2103)
        acked.push(r.payload.readUInt32LE(16))
      }
      c.close()
      assert.deepEqual([...acked].sort((x, y) => x - y), acked, 'ids grow in arrival order')
      const got = await pull(relay.port, b3)
      assert.deepEqual(got.map((e) => e.id), acked)
      assert.deepEqual(got.map((e) => e.type), plan.map((m) => m.type))
      for (const [i, e] of got.entries()) assert.ok(e.body.equals(plan[i].body), `message ${i}`)
    } finally {
      await relay.stop()
      home.cleanup()
    }
  })

  test('the timed flush moves every record into relay_messages, in slices and in order, big bodies included', async () => {
    const home = tempHome('mq-relay-jnl-slices-')
    const store = await RelayStore.open({dataDir: join(home.dir, 'data'), journal: {flushMs: 20}, url: 'sqlite'})
    try {
      const to = randomBytes(16)
      const from = randomBytes(16)
      const bodies = Array.from({length: 3000}, (_, i) => randomBytes(i % 500 === 7 ? 60 * 1024 : 50 + (i % 300)))
      const ids = await Promise.all(bodies.map((b) => store.add(to, from, 3, b.length, b, null)))
      for (let i = 0; i < 100 && rowsInDb(home.dir) < bodies.length; i++) await new Promise((r) => setTimeout(r, 50))
      assert.equal(rowsInDb(home.dir), bodies.length, 'all moved by the timer, no reader asked')
      const waiting = await store.pending(to, 5000)
      assert.deepEqual(waiting.map((m) => m.id), ids)
      for (const i of [0, 7, 1234, 2507, 2999]) assert.deepEqual(await store.body(ids[i]), bodies[i])
    } finally {
      await store.close()
      home.cleanup()
    }
  })

  test('a rotated journal: .prev and the current file are both replayed, in order, each record once', async () => {
    const home = tempHome('mq-relay-jnl-rot-')
    const dataDir = join(home.dir, 'data')
    const to = randomBytes(16)
    const from = randomBytes(16)
    let store = await RelayStore.open({dataDir, journal: {flushMs: 20}, url: 'sqlite'})
    const ids: number[] = []
    try {
      const big = randomBytes(50 * 1024)
      for (let i = 0; i < 25; i++) ids.push(await store.add(to, from, 3, big.length, big, null))
      await new Promise((r) => setTimeout(r, 1300))
      ids.push(await store.add(to, from, 3, 5, Buffer.from('after'), null))
      for (let i = 0; i < 50 && !existsSync(join(dataDir, 'relay.jnl.prev')); i++) await new Promise((r) => setTimeout(r, 50))
      assert.ok(existsSync(join(dataDir, 'relay.jnl.prev')), 'rotated past 1 MiB')
      ids.push(await store.add(to, from, 3, 4, Buffer.from('last'), null))
    } finally {
      await store.close()
    }
    const inFiles = ['relay.jnl.prev', 'relay.jnl'].flatMap((f) => decodeRecords(readFileSync(join(dataDir, f))).records.map((r) => r.id))
    assert.deepEqual(inFiles, ids.slice(ids.length - inFiles.length), 'the files hold the newest records, in order')
    // the database loses what the files still hold (an operating-system crash before its sync): replay brings it back once
    const db = new Database(join(dataDir, 'relay.db'))
    db.prepare(`DELETE FROM relay_messages WHERE id >= ?`).run(inFiles[0])
    db.prepare('UPDATE relay_journal_applied SET last_id = ?').run(inFiles[0] - 1)
    db.close()
    store = await RelayStore.open({dataDir, journal: HOLD, url: 'sqlite'})
    try {
      assert.equal(store.recovery.replayed, inFiles.length)
      assert.deepEqual((await store.pending(to)).map((m) => m.id), ids)
    } finally {
      await store.close()
      home.cleanup()
    }
  })

  test('a message too big for a journal record (store API, over 1 MiB) is stored directly: it and the records after it stay deliverable, in order, across a restart', async () => {
    const home = tempHome('mq-relay-jnl-big-')
    const dataDir = join(home.dir, 'data')
    const to = randomBytes(16)
    const from = randomBytes(16)
    const bodies = [Buffer.from('before'), randomBytes(2 << 20), Buffer.from('after')]
    let store = await RelayStore.open({dataDir, journal: HOLD, url: 'sqlite'})
    let ids: number[]
    try {
      ids = await Promise.all(bodies.map((b) => store.add(to, from, 3, b.length, b, null)))
      assert.deepEqual([...ids].sort((x, y) => x - y), ids)
      assert.deepEqual((await store.pending(to)).map((m) => m.id), ids)
    } finally {
      await store.close()
    }
    store = await RelayStore.open({dataDir, journal: HOLD, url: 'sqlite'})
    try {
      assert.deepEqual(store.recovery.torn, [])
      assert.deepEqual((await store.pending(to)).map((m) => m.id), ids)
      for (const [i, id] of ids.entries()) assert.ok((await store.body(id))?.equals(bodies[i]), `body ${i}`)
    } finally {
      await store.close()
      home.cleanup()
    }
  })

  test('one relay per journal: a second store on the same home is refused clearly until the first closes', async () => {
    const home = tempHome('mq-relay-jnl-lock-')
    const dataDir = join(home.dir, 'data')
    const first = await RelayStore.open({dataDir, url: 'sqlite'})
    try {
      await assert.rejects(RelayStore.open({dataDir, url: 'sqlite'}), (e: Error & {code?: string}) => e.code === 'E_RELAY_JOURNAL_LOCKED' && /one relay per store/.test(e.message))
    } finally {
      await first.close()
    }
    const second = await RelayStore.open({dataDir, url: 'sqlite'})
    await second.close()
    home.cleanup()
  })

  test('mq backup restore refuses a home whose relay is running (it would unlink the journal that relay appends to)', async () => {
    const home = tempHome('mq-relay-jnl-rsr-')
    const relay = await startRelay({home: home.dir, journal: HOLD})
    const pass = `${home.dir}.pass`
    const archive = `${home.dir}.mqb`
    try {
      const c = await RawClient.connect(relay.port)
      const alice = await registerRaw(c, 3, 'r-alice')
      const bob = await registerRaw(c, 3, 'r-bob')
      c.write(send(alice, bob, 3, randomBytes(50)))
      assert.equal((await c.response()).code, 2103)
      c.close()
      writeFileSync(pass, 'correct horse battery staple\n', {mode: 0o600})
      const created = await runCli(['backup', 'create', archive, '--passphrase-file', pass, '--json'], {home: home.dir})
      assert.equal(created.code, 0, created.stderr + created.stdout)
      const journal = readFileSync(join(home.dir, 'data', 'relay.jnl'))
      const restored = await runCli(['backup', 'restore', archive, '--home', home.dir, '--passphrase-file', pass, '--force'])
      assert.equal(restored.code, 75, restored.stderr + restored.stdout)
      assert.match(restored.stderr, /a relay is running on .* data\/relay\.jnl\.lock/)
      assert.ok(readFileSync(join(home.dir, 'data', 'relay.jnl')).equals(journal), 'the running relay keeps its journal')
      await relay.stop()
      const again = await runCli(['backup', 'restore', archive, '--home', home.dir, '--passphrase-file', pass, '--force'])
      assert.equal(again.code, 0, again.stderr + again.stdout)
    } finally {
      await relay.stop().catch(() => {})
      for (const f of [pass, archive]) rmSync(f, {force: true})
      home.cleanup()
    }
  })

  test('mq backup create includes texts still only in the journal; the restored relay delivers them once', async () => {
    const home = tempHome('mq-relay-jnl-bk-')
    const target = tempHome('mq-relay-jnl-bk-to-')
    const relay = await startRelay({home: home.dir, journal: HOLD})
    try {
      const c = await RawClient.connect(relay.port)
      const alice = await registerRaw(c, 3, 'b-alice')
      const bob = await registerRaw(c, 3, 'b-bob')
      const texts = [randomBytes(80), randomBytes(90)]
      const ids = []
      for (const t of texts) {
        c.write(send(alice, bob, 3, t))
        ids.push((await c.response()).payload.readUInt32LE(16))
      }
      c.close()
      assert.equal(rowsInDb(home.dir), 0, 'not flushed yet')
      const pass = join(target.dir, '..', `${target.dir.split('/').pop()}.pass`)
      writeFileSync(pass, 'correct horse battery staple\n', {mode: 0o600})
      const archive = `${target.dir}.mqb`
      const created = await runCli(['backup', 'create', archive, '--passphrase-file', pass, '--json'], {home: home.dir})
      assert.equal(created.code, 0, created.stderr + created.stdout)
      assert.equal(rowsInDb(home.dir), 0, 'the backup did not need a flush')
      // the home restored into had a relay of its own: its journal must not be replayed into the restored store
      mkdirSync(join(target.dir, 'data'), {recursive: true})
      writeFileSync(join(target.dir, 'data', 'relay.jnl.prev'), Buffer.concat(encodeRecord({body: Buffer.from('stale'), createdMs: Date.now(), file: null, from: alice, id: 1_000_000, size: 5, to: bob, type: 3})), {mode: 0o600})
      const restored = await runCli(['backup', 'restore', archive, '--home', target.dir, '--passphrase-file', pass, '--force'])
      assert.equal(restored.code, 0, restored.stderr + restored.stdout)
      assert.ok(existsSync(join(target.dir, 'data', 'relay.jnl')))
      const store = await RelayStore.open({dataDir: join(target.dir, 'data'), url: 'sqlite'})
      try {
        assert.equal(store.recovery.replayed, 2)
        const waiting = await store.pending(bob)
        assert.deepEqual(waiting.map((m) => m.id), ids)
        for (const [i, m] of waiting.entries()) assert.deepEqual(await store.body(m.id), texts[i])
      } finally {
        await store.close()
      }
    } finally {
      await relay.stop()
      home.cleanup()
      target.cleanup()
      for (const f of [`${target.dir}.mqb`, join(target.dir, '..', `${target.dir.split('/').pop()}.pass`)]) rmSync(f, {force: true})
    }
  })
})
