/** What a script sees from mq send / mq recv when the user got something wrong. */
import assert from 'node:assert/strict'
import {rmSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'

describe('send/recv user errors', () => {
  let broker: BrokerProcess
  const mq = (args: string[], input?: string) => runCli(args, {env: broker.cliEnv(), input})
  before(async () => {
    broker = await spawnBroker()
  })
  after(async () => {
    await broker?.cleanup()
  })

  test('send to a queue that does not exist: every line says to declare it, nothing is half-sent', async () => {
    const r = await mq(['send', '--queue', 'nosuch', '--plain', '--lines', '--json'], 'a\nb\n')
    assert.equal(r.code, 1, r.stderr)
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l))
    assert.equal(lines.length, 3) // one per message, then the summary
    for (const l of lines) {
      assert.equal(l.error.code, 'E_UNROUTABLE')
      assert.match(l.error.hint, /^Try this: (mq queue declare nosuch|create the queue first \(mq queue declare nosuch\)\.)$/)
    }
    assert.match(lines[0].error.message, /^no queue named "nosuch"/)
    const list = await mq(['queue', 'list', '--json'])
    assert.ok(!JSON.parse(list.stdout).some((q: {name: string}) => q.name === 'nosuch'))
  })

  test('plaintext needs no end-to-end identity: send --plain, recv --accept plain (admin has no keys/)', async () => {
    // the first start made admin's end-to-end identity: take it away, as on a home whose keys live elsewhere
    for (const f of ['admin.key', 'admin.pub', 'admin.crt', 'admin.sign.key', 'admin.sign.crt']) rmSync(join(broker.home, 'keys', f), {force: true})
    assert.equal((await mq(['queue', 'declare', 'public'])).code, 0)
    const s = await mq(['send', '--queue', 'public', '--plain', 'not secret'])
    assert.equal(s.code, 0, s.stderr)
    const r = await mq(['recv', '--queue', 'public', '--accept', 'plain', '--timeout', '5s'])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'not secret')
    // anything that must be decrypted still needs the identity, and says so
    const n = await mq(['recv', '--queue', 'public', '--timeout', '300ms'])
    assert.equal(n.code, 77)
    assert.match(n.stderr, /No end-to-end identity named "admin"/)
  })

  test('recv --timeout with nothing there: exit 75, {"error"} on stdout with --json, stdout empty without', async () => {
    assert.equal((await mq(['queue', 'declare', 'empty'])).code, 0)
    const j = await mq(['recv', '--queue', 'empty', '--accept', 'plain', '--timeout', '300ms', '--json'])
    assert.equal(j.code, 75)
    assert.deepEqual(JSON.parse(j.stdout).error, {
      code: 'E_RECV_TIMEOUT',
      exit: 75,
      hint: 'Try this: a longer --timeout, or check that senders publish to this queue.',
      message: 'No message arrived on empty within 300ms.',
    })
    const t = await mq(['recv', '--queue', 'empty', '--accept', 'plain', '--timeout', '1500ms'])
    assert.equal(t.code, 75)
    assert.equal(t.stdout, '')
    assert.match(t.stderr, /within 1\.5s/)
  })

  test('send --from an identity that was revoked: exit 77 before anything is signed or published', async () => {
    for (const n of ['dave', 'erin']) assert.equal((await mq(['keygen', n])).code, 0)
    assert.equal((await mq(['queue', 'declare', 'erin.inbox'])).code, 0)
    const ok = await mq(['send', '--queue', 'erin.inbox', '--from', 'dave', '--to', 'erin', 'before'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.equal((await mq(['cert', 'revoke', 'dave', '--reason', 'key-compromise'])).code, 0)
    const r = await mq(['send', '--queue', 'erin.inbox', '--from', 'dave', '--to', 'erin', 'after'])
    assert.equal(r.code, 77, r.stderr)
    assert.match(r.stderr, /Refusing to sign as dave: The key of dave \(serial [0-9a-f]+\) has been revoked/)
    const list = JSON.parse((await mq(['queue', 'list', '--json'])).stdout) as {name: string; messages: number}[]
    assert.equal(list.find((q) => q.name === 'erin.inbox')?.messages, 1, 'only the message sent before the revocation is queued')
  })
})
