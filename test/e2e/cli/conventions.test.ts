/**
 * What a user meets across commands: one flag name and one value format per concept, errors that
 * name the problem with a "Try this:" hint and the documented exit code, stdout for data only.
 */
import assert from 'node:assert/strict'
import {createServer} from 'node:net'
import {after, before, describe, test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {testPki} from '../../helpers/pki.js'
import {freePort} from '../../helpers/services.js'

// the tests are independent (read-only homes, their own ports): run them side by side to keep the suite fast
describe('CLI conventions', {concurrency: 3}, () => {
  const withCa = tempHome('mq-qa-ca-')
  const fresh = tempHome('mq-qa-fresh-')
  before(async () => {
    await testPki(withCa.dir, {clients: ['admin', 'ops'], servers: ['broker']})
  })
  after(() => {
    withCa.cleanup()
    fresh.cleanup()
  })

  test('--timeout takes the same durations on every command (10s, 500ms, 2s)', async () => {
    const port = await freePort() // nothing listens: each command gets as far as connecting
    for (const args of [
      ['queue', 'list', '--timeout', '10s'],
      ['stats', '--timeout', '1500ms'],
      ['keys', 'fetch', 'bob', '--timeout', '2s'],
      ['recv', '--queue', 'q', '--identity', 'ops', '--as', 'ops', '--timeout', '5s'],
    ]) {
      const r = await runCli([...args, '--broker', `127.0.0.1:${port}`, '--json'], {home: withCa.dir})
      if (args[0] === 'recv') {
        // recv checks its e2e identity first; what matters is that --timeout 5s parsed
        assert.notEqual(r.code, 2, r.stdout)
        continue
      }
      assert.equal(r.code, 69, `${args.join(' ')}: ${r.stdout}${r.stderr}`)
      assert.equal(JSON.parse(r.stdout).error.code, 'E_BROKER_UNREACHABLE')
    }
  })

  test('a bad --timeout is one clear line naming the flag, exit 2, and parses with --json', async () => {
    const r = await runCli(['queue', 'list', '--timeout', 'soon'], {home: withCa.dir})
    assert.equal(r.code, 2)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /^Error: --timeout: "soon" is not a duration\.\n/)
    assert.match(r.stderr, /Try this: --timeout 500ms, 10s/)
    assert.doesNotMatch(r.stderr, /Parsing|See more help/)
    const j = await runCli(['recv', '--queue', 'q', '--timeout', 'soon', '--json'], {home: withCa.dir})
    assert.equal(j.code, 2)
    assert.deepEqual(JSON.parse(j.stdout).error, {code: 'E_DURATION', exit: 2, hint: 'Try this: --timeout 500ms, 10s, 2m or 1h.', message: '--timeout: "soon" is not a duration.'})
    // a missing argument is not buried under oclif's note about --san, which the user did not give
    const m = await runCli(['cert', 'issue', '--type', 'client'], {home: fresh.dir})
    assert.equal(m.code, 2)
    assert.match(m.stderr, /^Error: Missing 1 required arg:\nname {2}certificate name/)
    assert.doesNotMatch(m.stderr, /Note:|multiple values/)
    const p = await runCli(['broker', 'start', '--port', '99999'], {home: fresh.dir})
    assert.equal(p.code, 2)
    assert.match(p.stderr, /^Error: --port: Expected an integer less than or equal to 65535/)
  })

  test('a wrong --identity names the identity, lists the usable ones and exits 77 (broker, send, relay)', async () => {
    const port = await freePort()
    const q = await runCli(['queue', 'list', '--identity', 'nobody', '--broker', `127.0.0.1:${port}`], {home: withCa.dir})
    assert.equal(q.code, 77, q.stderr)
    assert.match(q.stderr, /No client certificate named "nobody" in .*pki\/issued \(client certificates in this home: admin, ops\)/)
    assert.match(q.stderr, /Try this: --identity NAME for one of those, or mq cert issue nobody --type client/)
    const s = await runCli(['send', '--queue', 'q', '--to', 'bob', '--identity', 'nobody', 'hi', '--json'], {home: withCa.dir})
    assert.equal(s.code, 77, s.stdout)
    assert.equal(JSON.parse(s.stdout).error.code, 'E_IDENTITY_NOT_FOUND')
    const p = await runCli(['keys', 'publish', 'nobody', '--broker', `127.0.0.1:${port}`], {home: withCa.dir})
    assert.equal(p.code, 77, p.stderr)
    assert.match(p.stderr, /No end-to-end identity named "nobody"/)
    // the relay client takes the same --identity (and --timeout) for its TLS connection
    const r = await runCli(['relay', 'users', '--tls', '--identity', 'nobody', '--timeout', '2s', '--relay', `127.0.0.1:${port}`, '--json'], {home: withCa.dir})
    assert.equal(r.code, 77, r.stdout + r.stderr)
    assert.equal(JSON.parse(r.stdout).error.code, 'E_CERT_NOT_FOUND')
  })

  test('a fresh home without a broker: exit 77 and how to get a CA, not "mq cert ca init"', async () => {
    const r = await runCli(['queue', 'list', '--broker', '127.0.0.1:1'], {home: fresh.dir})
    assert.equal(r.code, 77)
    assert.match(r.stderr, /No CA certificate at /)
    assert.match(r.stderr, /Try this: start a broker on this machine \(mq broker start creates a development CA/)
  })

  test('a server whose port is taken: exit 69 naming the address, also with --json', async () => {
    const busy = createServer()
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    const port = (busy.address() as {port: number}).port
    try {
      const r = await runCli(['broker', 'start', '--port', String(port), '--api-port', String(await freePort()), '--json'], {home: withCa.dir})
      assert.equal(r.code, 69, r.stdout + r.stderr)
      const e = JSON.parse(r.stdout).error
      assert.equal(e.code, 'E_LISTEN')
      assert.equal(e.message, `Cannot listen on 127.0.0.1:${port}: that address is already in use.`)
      assert.match(e.hint, /^Try this: choose another --port/)
      const relay = await runCli(['relay', 'start', '--port', String(port)], {home: withCa.dir})
      assert.equal(relay.code, 69)
    } finally {
      busy.close()
    }
  })

  test('a bad address: exit 2 from a flag, 78 from the environment, for --broker and --relay alike', async () => {
    const flag = await runCli(['queue', 'list', '--broker', 'xx:yy'], {home: withCa.dir})
    assert.equal(flag.code, 2, flag.stderr)
    const env = await runCli(['queue', 'list', '--json'], {env: {MQ_BROKER: 'xx:yy'}, home: withCa.dir})
    assert.equal(env.code, 78, env.stdout)
    assert.deepEqual(JSON.parse(env.stdout).error, {code: 'E_BAD_ADDRESS', exit: 78, hint: 'Try this: export MQ_BROKER=127.0.0.1:5700', message: 'MQ_BROKER: broker address "xx:yy" is not HOST, HOST:PORT or mqs://HOST:PORT'})
    const rflag = await runCli(['relay', 'users', '--relay', 'zz'], {home: fresh.dir})
    assert.equal(rflag.code, 2, rflag.stderr)
    assert.match(rflag.stderr, /--relay holds "zz", not HOST:PORT/)
    const renv = await runCli(['relay', 'users'], {env: {MQ_RELAY: 'zz'}, home: fresh.dir})
    assert.equal(renv.code, 78, renv.stderr)
    // the operator commands' --api: a typo is a usage error, not "internal error: Invalid URL" (70)
    const api = await runCli(['message', 'list', '--api', 'bogus', '--json'], {home: withCa.dir})
    assert.equal(api.code, 2, api.stdout)
    assert.equal(JSON.parse(api.stdout).error.code, 'E_BAD_URL')
  })

  test('empty lists print nothing on stdout (a note on stderr)', async () => {
    const r = await runCli(['cert', 'list', '--type', 'e2e-enc'], {home: withCa.dir})
    assert.equal(r.code, 0)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /no certificates/)
    const j = await runCli(['cert', 'list', '--type', 'e2e-enc', '--json'], {home: withCa.dir})
    assert.deepEqual(JSON.parse(j.stdout), [])
  })

  test('an unknown or mistyped command: exit 2, a suggestion, {"error"} with --json', async () => {
    const typo = await runCli(['queue', 'lst'])
    assert.equal(typo.code, 2)
    assert.equal(typo.stdout, '')
    assert.equal(typo.stderr, 'Error: "mq queue lst" is not an mq command.\nTry this: mq queue list (or mq queue --help for the list)\n')
    const j = await runCli(['frobnicate', '--json'])
    assert.equal(j.code, 2)
    assert.deepEqual(JSON.parse(j.stdout).error, {code: 'E_UNKNOWN_COMMAND', exit: 2, hint: 'Try this: mq --help for the list of commands.', message: '"mq frobnicate" is not an mq command.'})
    const extra = await runCli(['config', 'show', 'extra'], {home: fresh.dir})
    assert.equal(extra.code, 2)
    assert.match(extra.stderr, /^Error: Unexpected argument: extra \(mq config show takes no arguments\)\.\nTry this: mq config show --help\n$/)
  })

  test('help: every topic has its own description and paragraphs wrap to the terminal', async () => {
    const top = await runCli(['--help'])
    assert.match(top.stdout, /^ {2}keys +Publish and fetch end-to-end identities/m)
    assert.match(top.stdout, /^ {2}user +Operator and portal users/m)
    // a wide terminal shows a paragraph on one line: no hard line breaks inside sentences
    const r = await runCli(['relay', 'start', '--help'], {env: {OCLIF_COLUMNS: '400'}})
    assert.match(r.stdout, /Users and undelivered messages live in the store/)
    const f = await runCli(['relay', 'fetch', '--help'], {env: {OCLIF_COLUMNS: '400'}})
    assert.match(f.stdout, /with --json each message is one JSON line/)
  })
})
