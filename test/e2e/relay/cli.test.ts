import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {readFileSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {freePort} from '../../helpers/services.js'
import {type RelayProcess, spawnRelay} from './relay-process.js'

describe('mq relay: two users end to end through the CLI', () => {
  const server = tempHome('mq-relay-srv-')
  const a = tempHome('mq-relay-a-')
  const b = tempHome('mq-relay-b-')
  let relay: RelayProcess
  let port: number
  let addr: string

  before(async () => {
    port = await freePort()
    addr = `127.0.0.1:${port}`
    // The port comes from ./myport.info, as the seed's server reads it.
    writeFileSync(join(server.dir, 'myport.info'), `${port}\n`)
    relay = await spawnRelay({cwd: server.dir, home: server.dir})
  })
  after(async () => {
    await relay?.stop()
    for (const h of [server, a, b]) h.cleanup()
  })

  const mq = (home: string, args: string[]) => runCli(['relay', ...args], {home})

  test('register, list, exchange keys, send a text and a file, survive a restart, fetch', async () => {
    assert.match(relay.stderr(), new RegExp(`port=${port} port_source=\\S*myport.info`))
    const ra = await mq(a.dir, ['register', 'alice', '--relay', addr, '--json'])
    assert.equal(ra.code, 0, ra.stderr)
    const alice = JSON.parse(ra.stdout)
    assert.equal(alice.suite, 'strong')
    assert.equal(alice.protocol, 3)
    // bob finds the relay through ./server.info, as the seed's client does
    writeFileSync(join(b.dir, 'server.info'), `${addr}\n`)
    const rb = await runCli(['relay', 'register', 'bob', '--json'], {cwd: b.dir, home: b.dir})
    assert.equal(rb.code, 0, rb.stderr)
    const bob = JSON.parse(rb.stdout)
    for (const f of ['me.json', 'me.key']) assert.equal(statSync(join(a.dir, 'relay', f)).mode & 0o777, 0o600)

    const dup = await mq(b.dir, ['register', 'alice', '--relay', addr, '--force', '--json'])
    assert.notEqual(dup.code, 0)
    assert.equal(JSON.parse(dup.stdout).error.code, 'E_RELAY_NAME_TAKEN')

    const users = await mq(a.dir, ['users', '--json'])
    assert.equal(users.code, 0, users.stderr)
    assert.deepEqual(JSON.parse(users.stdout).users, [{id: bob.client_id, name: 'bob'}])

    const key = await mq(a.dir, ['key', 'bob', '--json'])
    assert.equal(key.code, 0, key.stderr)
    assert.equal(JSON.parse(key.stdout).fingerprint, bob.fingerprint)

    const noKey = await mq(a.dir, ['send', 'bob', '--text', 'too early', '--json'])
    assert.equal(noKey.code, 1)
    assert.equal(JSON.parse(noKey.stdout).error.code, 'E_RELAY_NO_KEY')

    assert.equal((await mq(b.dir, ['request-key', 'alice'])).code, 0)
    const req = await mq(a.dir, ['fetch'])
    assert.equal(req.code, 0, req.stderr)
    assert.equal(req.stdout, 'From: bob\nContent:\nRequest for symmetric key\n-----<EOM>-----\n')

    assert.equal((await mq(a.dir, ['send-key', 'bob'])).code, 0)
    const text = 'hello bob, this is alice \u2713'
    const st = await mq(a.dir, ['send', 'bob', '--text', text, '--json'])
    assert.equal(st.code, 0, st.stderr)
    const file = join(a.dir, 'report.bin')
    const content = randomBytes(1_500_000)
    writeFileSync(file, content)
    const sf = await mq(a.dir, ['send', 'bob', '--file', file, '--json'])
    assert.equal(sf.code, 0, sf.stderr)
    assert.equal(JSON.parse(sf.stdout).bytes, content.length)

    // restart the relay before bob fetches: users and undelivered messages are kept
    assert.equal(await relay.stop(), 0)
    relay = await spawnRelay({cwd: server.dir, home: server.dir})
    assert.match(relay.stderr(), /messages=3 .*users=2/)

    const out = join(b.dir, 'inbox')
    const fb = await mq(b.dir, ['fetch', '--out', out])
    assert.equal(fb.code, 0, fb.stderr)
    const blocks = fb.stdout.split('-----<EOM>-----\n')
    assert.equal(blocks[0], 'From: alice\nContent:\nsymmetric key received\n')
    assert.equal(blocks[1], `From: alice\nContent:\n${text}\n`)
    assert.match(blocks[2], /^From: alice\nContent:\nfile saved to .*report\.bin \(1500000 bytes\)\n$/)
    assert.ok(readFileSync(join(out, 'report.bin')).equals(content))

    const again = await mq(b.dir, ['fetch', '--json'])
    assert.equal(again.code, 0)
    assert.equal(again.stdout, '')

    // --json: one JSON line per message
    assert.equal((await mq(b.dir, ['send', 'alice', '--text', 'reply', '--json'])).code, 0)
    const fa = await mq(a.dir, ['fetch', '--json'])
    const lines = fa.stdout.trim().split('\n').map((l) => JSON.parse(l))
    assert.deepEqual(lines.map((l) => [l.from, l.type, l.text]), [['bob', 'text', 'reply']])

    const unknown = await mq(a.dir, ['send', 'nobody', '--text', 'x', '--json'])
    assert.equal(JSON.parse(unknown.stdout).error.code, 'E_RELAY_UNKNOWN_USER')
  })

  test('--compat messageu speaks protocol v2 with MessageU crypto, and says it is weak', async () => {
    const c = tempHome('mq-relay-c-')
    const d = tempHome('mq-relay-d-')
    try {
      const help = await runCli(['relay', 'register', '--help'])
      assert.match(help.stdout, /WEAK/)
      const rc = await mq(c.dir, ['register', 'carol', '--compat', 'messageu', '--relay', addr, '--json'])
      assert.equal(rc.code, 0, rc.stderr)
      assert.match(rc.stderr, /weak crypto/)
      assert.equal(JSON.parse(rc.stdout).protocol, 2)
      assert.equal((await mq(d.dir, ['register', 'dave', '--compat', 'messageu', '--relay', addr])).code, 0)
      const mismatch = await mq(a.dir, ['users', '--compat', 'messageu', '--json'])
      assert.equal(JSON.parse(mismatch.stdout).error.code, 'E_RELAY_COMPAT_MISMATCH')
      assert.equal((await mq(c.dir, ['send-key', 'dave'])).code, 0)
      assert.equal((await mq(c.dir, ['send', 'dave', '--text', 'old school'])).code, 0)
      const f = await mq(d.dir, ['fetch', '--json'])
      assert.equal(f.code, 0, f.stderr)
      const lines = f.stdout.trim().split('\n').map((l) => JSON.parse(l))
      assert.deepEqual(lines.map((l) => l.text), ['symmetric key received', 'old school'])
    } finally {
      c.cleanup()
      d.cleanup()
    }
  })
})

test('mq relay bench --json runs end to end with small sizes and reports both figures', async () => {
  const h = tempHome('mq-relay-bench-')
  try {
    const r = await runCli(['relay', 'bench', '--messages', '20', '--file-mib', '1', '--json'], {home: h.dir})
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout)
    assert.equal(out.messages, 20)
    assert.ok(out.send_msgs_per_s > 0 && out.end_to_end_msgs_per_s > 0)
    assert.ok(out.file_upload_mib_per_s > 0 && out.file_download_mib_per_s > 0)
    assert.match(out.baseline.name, /loopback TCP twin/)
    // CPU per text and per baseline round trip, and the disk's own rate for the file's bytes
    assert.ok(out.send_cpu_us > 0 && out.baseline.roundtrip_cpu_us > 0)
    assert.ok(out.disk_mib_per_s > 0)
    // the figures: p99 and errors of the texts, the ratios against their targets, peak memory
    assert.equal(out.send_errors, 0)
    assert.ok(out.send_p99_ms >= out.send_p50_ms && out.send_p50_ms > 0)
    assert.ok(out.ratios.send_vs_roundtrip > 0 && out.ratios.upload_vs_tcp > 0)
    assert.deepEqual(out.targets, {send_vs_roundtrip: 0.5, upload_vs_tcp: 0.6})
    assert.ok(out.peak_rss_mib > 0)
    const text = await runCli(['relay', 'bench', '--messages', '20', '--file-mib', '1'], {home: h.dir})
    assert.equal(text.code, 0, text.stderr)
    assert.match(text.stdout, /send .* p99 [\d.]+ ms, errors 0 .*target >= 0\.5x: (met|not met)/)
    assert.match(text.stdout, /file up .*target >= 0\.6x: (met|not met); this disk: [\d.]+ MiB\/s written with fsync/)
    assert.match(text.stdout, /send CPU +[\d.]+ us per text .* baseline [\d.]+ us per round trip/)
  } finally {
    h.cleanup()
  }
})

test('an unreachable relay exits 69 with E_RELAY_UNAVAILABLE, and an unregistered home says how to register', async () => {
  const h = tempHome('mq-relay-down-')
  try {
    const port = await freePort()
    const r = await runCli(['relay', 'register', 'x', '--relay', `127.0.0.1:${port}`, '--json'], {home: h.dir})
    assert.equal(r.code, 69)
    assert.equal(JSON.parse(r.stdout).error.code, 'E_RELAY_UNAVAILABLE')
    const u = await runCli(['relay', 'users'], {home: h.dir})
    assert.equal(u.code, 77)
    assert.match(u.stderr, /Try this: mq relay register NAME/)
  } finally {
    h.cleanup()
  }
})
