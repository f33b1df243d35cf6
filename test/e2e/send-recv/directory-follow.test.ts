import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {cpSync, existsSync, mkdirSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import type {BrokerClient} from '../../../src/lib/client/client.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {BIN, ROOT, runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {waitFor} from '../../helpers/services.js'
import {type TestBroker, startTestBroker} from './harness.js'

describe('key directory and mq recv --follow', () => {
  let b: TestBroker
  let admin: BrokerClient
  const other = tempHome('mq-e2e-alice-')

  before(async () => {
    b = await startTestBroker(['alice', 'bob'])
    admin = await b.client()
    await admin.declareQueue('mail', {deadLetter: 'mail.dlq', durable: true})
    // alice's own machine: the CA certificate, a TLS client identity and her keys, but not bob's
    const h = new MqHome(other.dir)
    mkdirSync(h.issued, {recursive: true})
    mkdirSync(h.keys, {mode: 0o700, recursive: true})
    cpSync(b.home.caCert, h.caCert)
    for (const f of ['admin.crt', 'admin.key']) cpSync(join(b.home.issued, f), join(h.issued, f))
    for (const f of ['alice.crt', 'alice.key', 'alice.sign.crt', 'alice.sign.key']) cpSync(join(b.home.keys, f), join(h.keys, f))
  })
  after(async () => {
    await admin?.close()
    await b?.stop()
    other.cleanup()
  })

  it('alice encrypts to bob with keys fetched from the broker directory, verified and cached', async () => {
    const env = {MQ_BROKER: b.env.MQ_BROKER}
    const before = await runCli(['send', '--queue', 'mail', '--from', 'alice', '--to', 'bob', 'hi'], {env, home: other.dir})
    assert.equal(before.code, 66, before.stderr) // not found: bob has published no keys yet
    assert.match(before.stderr, /mq keys publish bob/)
    const pub = await runCli(['keys', 'publish', 'bob', '--json'], {env: b.env})
    assert.equal(pub.code, 0, pub.stderr)
    assert.equal(JSON.parse(pub.stdout).name, 'bob')
    const s = await runCli(['send', '--queue', 'mail', '--from', 'alice', '--to', 'bob', 'hi bob'], {env, home: other.dir})
    assert.equal(s.code, 0, s.stderr)
    assert.ok(existsSync(join(other.dir, 'keys', 'cache', 'bob.crt')))
    assert.ok(existsSync(join(other.dir, 'keys', 'cache', 'bob.sign.crt')))
    const r = await runCli(['recv', '--queue', 'mail', '--as', 'bob', '--json'], {env: b.env})
    assert.equal(r.code, 0, r.stderr)
    assert.equal(JSON.parse(r.stdout).payload, 'hi bob')
    // the broker refuses a directory entry certified for someone else (senders check again themselves)
    await assert.rejects(admin.putKey('bob', readFileSync(join(b.home.keys, 'alice.crt'), 'utf8'), readFileSync(join(b.home.keys, 'alice.sign.crt'), 'utf8')))
    // a cached certificate that is not bob's is not used: the sender refetches and repairs the cache
    const cached = join(other.dir, 'keys', 'cache', 'bob.crt')
    cpSync(join(b.home.keys, 'alice.crt'), cached)
    const s2 = await runCli(['send', '--queue', 'mail', '--from', 'alice', '--to', 'bob', 'again'], {env, home: other.dir})
    assert.equal(s2.code, 0, s2.stderr)
    assert.equal(readFileSync(cached, 'utf8'), readFileSync(join(b.home.keys, 'bob.crt'), 'utf8'))
    const r2 = await runCli(['recv', '--queue', 'mail', '--as', 'bob'], {env: b.env})
    assert.equal(r2.stdout, 'again')
  })

  it('--follow acks everything written and exits 0 on SIGTERM', async () => {
    const child = spawn(process.execPath, [BIN, 'recv', '--queue', 'mail', '--as', 'bob', '--follow', '--json'], {cwd: ROOT, env: {...process.env, ...b.env, NO_COLOR: '1'}, stdio: ['ignore', 'pipe', 'pipe']})
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
    const s = await runCli(['send', '--queue', 'mail', '--from', 'alice', '--to', 'bob', '--lines'], {env: b.env, input: 'a\nb\nc\n'})
    assert.equal(s.code, 0, s.stderr)
    await waitFor(() => out.split('\n').filter(Boolean).length === 3, 20_000)
    child.kill('SIGTERM')
    assert.equal(await exit, 0, err)
    assert.deepEqual(
      out
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l).payload),
      ['a', 'b', 'c'],
    )
    const q = (await admin.listQueues()).find((x) => x.name === 'mail')
    assert.equal(q?.messages, 0)
    assert.equal(q?.unacked, 0)
  })

  it('mq bench e2e measures plaintext and encrypted runs through the broker (shape only, no timing asserted)', async () => {
    const r = await runCli(['bench', 'e2e', '--messages', '300', '--rounds', '2', '--size', '256', '--recipients', '1,3', '--json'], {env: b.env})
    assert.equal(r.code, 0, r.stderr)
    type Run = {messages: number; cpu_us_per_msg: number}
    const runs = JSON.parse(r.stdout) as {size: number; recipients: number; plain: Run; encrypted: Run; runs: {plain: Run[]; encrypted: Run[]}; unwraps: number; ratio: number}[]
    assert.deepEqual(
      runs.map((x) => [x.size, x.recipients]),
      [
        [256, 1],
        [256, 3],
      ],
    )
    for (const out of runs) {
      assert.equal(out.plain.messages, 300)
      assert.equal(out.encrypted.messages, 300)
      assert.equal(out.unwraps, 1, 'one RSA unwrap for the whole encrypted stream')
      assert.ok(out.ratio > 0)
      assert.ok(out.encrypted.cpu_us_per_msg > 0, 'CPU per message, snake_case like every --json key')
      // every round's run, not only the median one: CPU per message is compared across builds by its spread
      for (const mode of ['plain', 'encrypted'] as const) {
        assert.equal(out.runs[mode].length, 2, `${mode}: one run per round`)
        for (const run of out.runs[mode]) assert.ok(run.messages === 300 && run.cpu_us_per_msg > 0, `${mode} run ${JSON.stringify(run)}`)
      }
    }
  })
})
