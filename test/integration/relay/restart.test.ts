import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {describe, test} from 'node:test'

import {Op, encodeSendHeader} from '../../../src/lib/relay/protocol.js'
import {tempHome} from '../../helpers/home.js'
import {tempMysqlDatabase} from '../../helpers/services.js'
import {RawClient, registerRaw, req, startRelay} from './harness.js'

/** Users and undelivered messages (inline and file contents) survive a restart, on either backend. */
async function restartKeepsState(url: string | undefined): Promise<void> {
  const home = tempHome('mq-relay-')
  try {
    let relay = await startRelay({home: home.dir, url})
    let c = await RawClient.connect(relay.port)
    const alice = await registerRaw(c, 2, 'r-alice')
    const bob = await registerRaw(c, 3, 'r-bob')
    const text = Buffer.from('kept across restarts')
    const blob = randomBytes(300_000)
    c.write(req(2, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 3, text.length), text])))
    const id1 = (await c.response()).payload.readUInt32LE(16)
    c.write(req(2, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 4, blob.length), blob])))
    const id2 = (await c.response()).payload.readUInt32LE(16)
    c.close()
    await relay.stop()

    relay = await startRelay({home: home.dir, url})
    try {
      c = await RawClient.connect(relay.port)
      c.write(req(3, bob, Op.list))
      const list = await c.response()
      assert.equal(list.code, 2101)
      assert.ok(list.payload.includes(alice))
      // duplicate names are still refused after the restart
      const dup = Buffer.concat([Buffer.alloc(255), Buffer.alloc(160)])
      dup.write('r-alice')
      c.write(req(2, Buffer.alloc(16), Op.register, dup))
      assert.equal((await c.response()).code, 9000)
      c.write(req(3, bob, Op.pull))
      const r = await c.response()
      assert.equal(r.code, 2104)
      assert.equal(r.payload.readUInt32LE(16), id1)
      assert.deepEqual(r.payload.subarray(25, 25 + text.length), text)
      const o = 25 + text.length
      assert.equal(r.payload.readUInt32LE(o + 16), id2)
      assert.ok(r.payload.subarray(o + 25).equals(blob))
      // message ids stay unique: a new message gets a fresh one
      c.write(req(2, alice, Op.send, Buffer.concat([encodeSendHeader(bob, 1, 0)])))
      const id3 = (await c.response()).payload.readUInt32LE(16)
      assert.ok(id3 > id2)
      c.close()
    } finally {
      await relay.stop()
    }
  } finally {
    home.cleanup()
  }
}

describe('relay storage', () => {
  test('SQLite: users and undelivered messages survive a restart', async () => {
    await restartKeepsState(undefined)
  })

  test('MySQL: users and undelivered messages survive a restart', async () => {
    const db = await tempMysqlDatabase()
    try {
      await restartKeepsState(db.url)
    } finally {
      await db.drop()
    }
  })
})
