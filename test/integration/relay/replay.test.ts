import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {copyFileSync, readFileSync, readdirSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {MessageType} from '../../../src/lib/relay/protocol.js'
import {type FetchedMessage, RelayClient} from '../../../src/lib/relay/service.js'
import type {StoredMessage} from '../../../src/lib/relay/store.js'
import {tempHome} from '../../helpers/home.js'
import {type RunningRelay, startRelay} from './harness.js'

/**
 * The relay holds ciphertexts it cannot read, but it could hand a stored one to its recipient
 * again. Here the test plays that dishonest relay: it copies stored messages (rows and content
 * files) through the relay's own store before the recipient pulls them, and queues the copies
 * again afterwards. The strong suite's authenticated counters must make bob refuse each copy.
 */
describe('relay strong suite: a message the relay delivers again is refused', () => {
  const srv = tempHome('mq-relay-replay-srv-')
  const ha = tempHome('mq-relay-replay-a-')
  const hb = tempHome('mq-relay-replay-b-')
  const inbox = join(hb.dir, 'inbox')
  let relay: RunningRelay
  let alice: RelayClient
  let bob: RelayClient
  const filesDir = () => join(srv.dir, 'data', 'relay-files')

  before(async () => {
    relay = await startRelay({home: srv.dir})
    alice = new RelayClient(new MqHome(ha.dir), {host: '127.0.0.1', port: relay.port}, {timeoutMs: 5000})
    bob = new RelayClient(new MqHome(hb.dir), {host: '127.0.0.1', port: relay.port}, {timeoutMs: 5000})
    await alice.register('alice', 'strong')
    await bob.register('bob', 'strong')
    alice.close()
    bob.close()
  })
  after(async () => {
    alice?.close()
    bob?.close()
    await relay?.stop()
    for (const h of [srv, ha, hb]) h.cleanup()
  })

  const bobId = () => bob.keyring.identity().clientId

  /** What a dishonest relay keeps: every waiting message for bob, with its content. */
  async function snapshot(): Promise<StoredMessage[]> {
    const out: StoredMessage[] = []
    for (const m of await relay.store.pending(bobId())) {
      let file = m.file
      if (file) {
        file = `copy-${randomBytes(6).toString('hex')}.msg`
        copyFileSync(join(filesDir(), m.file!), join(filesDir(), file))
      }
      out.push({...m, body: m.file ? null : await relay.store.body(m.id), file})
    }
    return out
  }

  async function requeue(copies: StoredMessage[]): Promise<void> {
    for (const m of copies) await relay.store.addMessage({body: m.body, file: m.file, from: m.from, size: m.size, to: m.to, type: m.type})
  }

  /** A fresh client object each time: what bob has seen must come from his home, not from memory. */
  async function fetchBob(): Promise<FetchedMessage[]> {
    const c = new RelayClient(new MqHome(hb.dir), {host: '127.0.0.1', port: relay.port}, {timeoutMs: 5000})
    try {
      return await c.fetch(inbox, () => {})
    } finally {
      c.close()
    }
  }

  const inboxFiles = () => readdirSync(inbox).filter((f) => !f.startsWith('.'))

  test('a text, a file and a key delivered a second time are refused, and nothing is shown or saved twice', async () => {
    await alice.sendKey('bob')
    alice.close()
    const oldKey = await snapshot()
    assert.deepEqual(oldKey.map((m) => m.type), [MessageType.symmetricKey])
    assert.deepEqual((await fetchBob()).map((m) => [m.text, m.error]), [['symmetric key received', undefined]])

    // alice replaces the key; the relay will later try to put the old one back
    await alice.sendKey('bob')
    await alice.sendText('bob', 'pay bob 10 EUR')
    const file = join(ha.dir, 'contract.bin')
    const content = randomBytes(200_000) // over 64 KiB: the relay keeps it in a file, not a row
    writeFileSync(file, content)
    await alice.sendFile('bob', file)
    alice.close()
    const copies = await snapshot()
    assert.deepEqual(copies.map((m) => m.type), [MessageType.symmetricKey, MessageType.text, MessageType.file])
    assert.ok(copies[2].file, 'the file content is stored in a file')

    const first = await fetchBob()
    assert.deepEqual(first.map((m) => [m.type, m.text, m.error]), [
      ['key', 'symmetric key received', undefined],
      ['text', 'pay bob 10 EUR', undefined],
      ['file', undefined, undefined],
    ])
    assert.deepEqual(readFileSync(first[2].path!), content)
    assert.deepEqual(inboxFiles(), ['contract.bin'])
    const currentKey = bob.keyring.peer('alice')!.symKey

    await requeue([...copies, ...oldKey])
    const again = await fetchBob()
    assert.equal(again.length, 4)
    for (const m of again) {
      assert.equal(m.text, undefined, `${m.type} must not be shown again`)
      assert.equal(m.path, undefined, `${m.type} must not be saved again`)
      assert.match(m.error ?? '', /^replayed message refused: alice's message \d+ was already received; the relay delivered it again$/, m.type)
    }
    assert.deepEqual(inboxFiles(), ['contract.bin'], 'no second copy of the file, not even a leftover part file')
    assert.deepEqual(readdirSync(inbox).filter((f) => f.endsWith('.part')), [])
    assert.equal(bob.keyring.peer('alice')!.symKey, currentKey, 'the old key was not put back')

    // the current key still works: fresh messages are accepted
    await alice.sendText('bob', 'still here')
    alice.close()
    assert.deepEqual((await fetchBob()).map((m) => [m.text, m.error]), [['still here', undefined]])

    const counters = join(hb.dir, 'relay', 'counters.json')
    assert.equal(statSync(counters).mode & 0o777, 0o600)
    const state = JSON.parse(readFileSync(counters, 'utf8')) as {received: Record<string, {recent: string[]}>}
    assert.equal(state.received[alice.keyring.identity().clientId.toString('hex')].recent.length, 5)
  })

  test('a stored message whose counter the relay altered fails authentication', async () => {
    await alice.sendText('bob', 'renumber me')
    await alice.sendKey('bob')
    alice.close()
    const [text, key] = await relay.store.pending(bobId())
    for (const m of [text, key]) {
      const body = (await relay.store.body(m.id))!
      body.writeBigUInt64LE(body.readBigUInt64LE(0) + 1_000_000n, 0)
      await relay.store.sql.run('UPDATE relay_messages SET body = ? WHERE id = ?', [body, m.id])
    }
    const got = await fetchBob()
    assert.deepEqual(got.map((m) => m.type), ['text', 'key'])
    assert.equal(got[0].text, undefined)
    assert.match(got[0].error ?? '', /^can't decrypt message: .*authenticate/)
    assert.match(got[1].error ?? '', /^can't decrypt message: .*bad signature/)
  })

  test('messages of one sender that arrive out of order are all accepted once', async () => {
    // the key altered above was refused, so alice and bob share a key again first
    await alice.sendKey('bob')
    alice.close()
    assert.deepEqual((await fetchBob()).map((m) => m.error), [undefined])
    await alice.sendText('bob', 'first')
    await alice.sendText('bob', 'second')
    alice.close()
    const [m1] = await snapshot()
    const [first] = await relay.store.pending(bobId())
    await relay.store.deleteMessages([first.id])
    await requeue([m1])
    const got = await fetchBob()
    assert.deepEqual(got.map((m) => [m.text, m.error]), [
      ['second', undefined],
      ['first', undefined],
    ])
  })
})
