import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {test} from 'node:test'

import {type JournalRecord, decodeRecords, encodeRecord, fitsRecord} from '../../../src/lib/relay/journal.js'

const rec = (id: number, body: Buffer | null, file: string | null = null, type = 3): JournalRecord => ({body, createdMs: 1_765_000_000_000 + id, file, from: randomBytes(16), id, size: file ? 5_000_000 : (body?.length ?? 0), to: randomBytes(16), type})

const plain = (r: JournalRecord) => ({...r, body: r.body && Buffer.from(r.body), from: Buffer.from(r.from), to: Buffer.from(r.to)})

test('journal records read back as written: small and big bodies, empty ones, file messages, ids past 2^32', () => {
  const records = [rec(1, Buffer.from('hello')), rec(2, Buffer.alloc(0), null, 1), rec(3, randomBytes(64 * 1024)), rec(4, null, 'a'.repeat(32) + '.msg', 4), rec(2 ** 40 + 5, randomBytes(4096))]
  const b = Buffer.concat(records.flatMap((r) => encodeRecord(r)))
  const got = decodeRecords(b)
  assert.equal(got.end, b.length)
  assert.deepEqual(got.records.map(plain), records.map(plain))
})

test('a record cut anywhere, or with any byte changed, ends the journal there: the records before it stay', () => {
  const first = [rec(1, Buffer.from('kept one')), rec(2, randomBytes(300))]
  const head = Buffer.concat(first.flatMap((r) => encodeRecord(r)))
  const last = Buffer.concat(encodeRecord(rec(3, randomBytes(200))))
  for (let cut = 0; cut < last.length; cut++) {
    const got = decodeRecords(Buffer.concat([head, last.subarray(0, cut)]))
    assert.equal(got.records.length, 2, `cut at ${cut}`)
    assert.equal(got.end, head.length)
  }
  for (let at = 0; at < last.length; at += 7) {
    const bad = Buffer.from(last)
    bad[at] ^= 0x5a
    const got = decodeRecords(Buffer.concat([head, bad, Buffer.concat(encodeRecord(rec(4, Buffer.from('after'))))]))
    assert.equal(got.records.length, 2, `byte ${at} changed`)
  }
  // zeros where a record should be (a file extended but never written)
  assert.equal(decodeRecords(Buffer.concat([head, Buffer.alloc(4096)])).records.length, 2)
})

test('a record that would not read back (payload over 1 MiB) is refused when written, not when read', () => {
  assert.equal(fitsRecord(randomBytes(64 * 1024), null), true)
  assert.equal(fitsRecord(Buffer.alloc(1 << 20), null), false)
  assert.throws(() => encodeRecord(rec(1, Buffer.alloc(1 << 20))), /at most/)
})
