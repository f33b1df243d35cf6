import assert from 'node:assert/strict'
import {statSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {RelayStore, type StoredMessage} from '../../../src/lib/relay/store.js'
import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {freePort} from '../../helpers/services.js'
import {type RelayProcess, spawnRelay} from './relay-process.js'

/**
 * What a user sees when the relay (here: a test writing into the running relay's own database, as
 * a compromised relay could) delivers a stored text a second time: `mq relay fetch` prints it once,
 * then reports the copy as a refused replay, on stdout in MessageU's block and as a warning on stderr.
 */
describe('mq relay fetch: a text the relay delivers twice is printed once', () => {
  const server = tempHome('mq-relay-rpl-srv-')
  const a = tempHome('mq-relay-rpl-a-')
  const b = tempHome('mq-relay-rpl-b-')
  let relay: RelayProcess
  let addr: string

  before(async () => {
    addr = `127.0.0.1:${await freePort()}`
    relay = await spawnRelay({args: ['--port', addr.split(':')[1]], home: server.dir})
  })
  after(async () => {
    await relay?.stop()
    for (const h of [server, a, b]) h.cleanup()
  })

  const mq = (home: string, args: string[]) => runCli(['relay', ...args], {home})

  test('the replayed copy is refused with a clear message and not printed again', async () => {
    assert.equal((await mq(a.dir, ['register', 'alice', '--relay', addr])).code, 0)
    const rb = await mq(b.dir, ['register', 'bob', '--relay', addr, '--json'])
    assert.equal(rb.code, 0, rb.stderr)
    const bobId = Buffer.from(JSON.parse(rb.stdout).client_id, 'hex')
    assert.equal((await mq(a.dir, ['send-key', 'bob'])).code, 0)
    assert.equal((await mq(b.dir, ['fetch'])).code, 0)
    assert.equal((await mq(a.dir, ['send', 'bob', '--text', 'transfer 100 to bob'])).code, 0)

    // the dishonest operator's own connection to relay.db beside the running relay, which holds the
    // journal: the text is there once the relay moved it from its journal (within 250 ms)
    const store = await RelayStore.open({dataDir: join(server.dir, 'data'), journal: false, url: 'sqlite'})
    try {
      const copies: StoredMessage[] = []
      for (let i = 0; i < 50 && copies.length === 0; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, 100))
        for (const m of await store.pending(bobId)) copies.push({...m, body: await store.body(m.id)})
      }
      assert.equal(copies.length, 1)

      const first = await mq(b.dir, ['fetch'])
      assert.equal(first.code, 0, first.stderr)
      assert.equal(first.stdout, 'From: alice\nContent:\ntransfer 100 to bob\n-----<EOM>-----\n')

      for (const m of copies) await store.addMessage({body: m.body, file: m.file, from: m.from, size: m.size, to: m.to, type: m.type})
      const second = await mq(b.dir, ['fetch'])
      assert.equal(second.code, 0, second.stderr)
      assert.match(second.stdout, /^From: alice\nContent:\nreplayed message refused: alice's message \d+ was already received; the relay delivered it again\n-----<EOM>-----\n$/)
      assert.doesNotMatch(second.stdout, /transfer 100/)
      assert.match(second.stderr, /replayed message refused/)
      assert.equal(statSync(join(b.dir, 'relay', 'counters.json')).mode & 0o777, 0o600)
    } finally {
      await store.close()
    }
  })
})
