import assert from 'node:assert/strict'
import {readFileSync, statSync} from 'node:fs'
import {join} from 'node:path'
import {after, describe, test} from 'node:test'

import {decodeRecords} from '../../../src/lib/relay/journal.js'
import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {freePort} from '../../helpers/services.js'
import {type RelayProcess, spawnRelay} from './relay-process.js'

/**
 * `mq relay start` appends every acknowledged message to $MQ_HOME/data/relay.jnl before its ack. That
 * file holds what relay_messages holds, the clients' ciphertext: 0600, never a text's plaintext; and a
 * second relay on the same home is refused instead of sharing it.
 */
describe('mq relay start: the journal on disk', () => {
  const server = tempHome('mq-relay-jnl-srv-')
  const a = tempHome('mq-relay-jnl-a-')
  const b = tempHome('mq-relay-jnl-b-')
  let relay: RelayProcess | undefined
  after(async () => {
    await relay?.stop()
    for (const h of [server, a, b]) h.cleanup()
  })
  const mq = (home: string, args: string[]) => runCli(['relay', ...args], {home})

  test('is 0600 and holds the sent text only as ciphertext; a second relay on the home fails clearly', async () => {
    const port = await freePort()
    relay = await spawnRelay({args: ['--port', String(port)], home: server.dir})
    const addr = `127.0.0.1:${port}`
    assert.equal((await mq(a.dir, ['register', 'alice', '--relay', addr])).code, 0)
    assert.equal((await mq(b.dir, ['register', 'bob', '--relay', addr])).code, 0)
    assert.equal((await mq(a.dir, ['send-key', 'bob'])).code, 0)
    const text = 'the eagle lands at midnight, platform 9'
    const sent = await mq(a.dir, ['send', 'bob', '--text', text])
    assert.equal(sent.code, 0, sent.stderr)

    const file = join(server.dir, 'data', 'relay.jnl')
    assert.equal(statSync(file).mode & 0o777, 0o600)
    const bytes = readFileSync(file)
    const {records} = decodeRecords(bytes)
    assert.deepEqual(records.map((r) => r.type), [2, 3], 'the key and the text, in the journal')
    assert.equal(bytes.includes(Buffer.from(text)), false)
    assert.equal(bytes.includes(Buffer.from('eagle')), false)

    const second = await runCli(['relay', 'start', '--port', String(await freePort())], {home: server.dir})
    assert.notEqual(second.code, 0)
    assert.match(second.stderr + second.stdout, /E_RELAY_JOURNAL_LOCKED|Another relay holds .*relay\.jnl\.lock/)
    assert.equal(relay.proc.exitCode, null, 'the first relay runs on')

    const f = await mq(b.dir, ['fetch'])
    assert.equal(f.code, 0, f.stderr)
    assert.match(f.stdout, /the eagle lands at midnight/)
  })
})
