import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {readFileSync, readdirSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n)
      if (statSync(p).isDirectory()) walk(p)
      else out[p] = readFileSync(p, 'utf8')
    }
  }
  walk(dir)
  return out
}

describe('mq cert and mq keygen from the CLI', () => {
  const h = tempHome()
  const cli = (args: string[], input?: string) => runCli(args, {home: h.dir, input})

  before(async () => {
    const r = await cli(['cert', 'ca', 'init', '--json'])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(JSON.parse(r.stdout).type, 'ca')
  })
  after(() => h.cleanup())

  test('issue, list, show, revoke, crl: every --json output parses; openssl agrees', async () => {
    const s = await cli(['cert', 'issue', 'broker', '--type', 'server', '--san', 'DNS:mq.internal', '--san', 'IP:10.1.2.3', '--json'])
    assert.equal(s.code, 0, s.stderr)
    const c = await cli(['cert', 'issue', 'alice', '--type', 'client', '--json'])
    assert.equal(c.code, 0, c.stderr)
    const alice = JSON.parse(c.stdout)
    assert.equal(alice.status, 'active')
    assert.equal(statSync(alice.key_path).mode & 0o777, 0o600)
    const text = execFileSync('openssl', ['x509', '-in', JSON.parse(s.stdout).cert_path, '-noout', '-ext', 'subjectAltName'], {encoding: 'utf8'})
    assert.match(text, /DNS:mq\.internal, IP Address:10\.1\.2\.3/)

    const list = JSON.parse((await cli(['cert', 'list', '--json'])).stdout)
    assert.deepEqual(list.map((x: {name: string}) => x.name).sort(), ['alice', 'broker'])
    const show = JSON.parse((await cli(['cert', 'show', 'alice', '--json'])).stdout)
    assert.equal(show.serial, alice.serial)
    assert.match(show.pem, /BEGIN CERTIFICATE/)

    const rv = await cli(['cert', 'revoke', 'alice', '--reason', 'key-compromise', '--json'])
    assert.equal(rv.code, 0, rv.stderr)
    assert.equal(JSON.parse(rv.stdout).revoked[0].reason, 'key-compromise')
    const revokedList = JSON.parse((await cli(['cert', 'list', '--status', 'revoked', '--json'])).stdout)
    assert.deepEqual(revokedList.map((x: {serial: string}) => x.serial), [alice.serial])
    const v = (() => {
      try {
        execFileSync('openssl', ['verify', '-crl_check', '-CAfile', 'pki/ca.crt', '-CRLfile', 'pki/crl.pem', alice.cert_path], {cwd: h.dir, encoding: 'utf8', stdio: 'pipe'})
        return 'ok'
      } catch (error) {
        return String((error as {stdout: string}).stdout) + String((error as {stderr: string}).stderr)
      }
    })()
    assert.match(v, /certificate revoked/)

    const crl1 = JSON.parse((await cli(['cert', 'crl', '--json'])).stdout)
    const crl2 = JSON.parse((await cli(['cert', 'crl', '--days', '1', '--json'])).stdout)
    assert.equal(crl2.number, crl1.number + 1)
    assert.equal(crl2.revoked, 1)
  })

  test('keygen prints the fingerprint and writes 0600 keys; again without --force is refused', async () => {
    const r = await cli(['keygen', 'carol'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^carol [0-9a-f]{4}(:[0-9a-f]{4}){15}\n$/)
    for (const f of ['carol.key', 'carol.sign.key']) assert.equal(statSync(join(h.dir, 'keys', f)).mode & 0o777, 0o600)
    const again = await cli(['keygen', 'carol', '--json'])
    assert.equal(again.code, 1)
    assert.equal(JSON.parse(again.stdout).error.code, 'E_KEY_EXISTS')
  })

  test('documented exit codes: 1 exists, 66 not found, 2 usage, 65 bad data, 70 internal, 77 permission', async () => {
    const exists = await cli(['cert', 'ca', 'init'])
    assert.equal(exists.code, 1)
    assert.match(exists.stderr, /already exists/)
    assert.match(exists.stderr, /Try this: .*--force/)

    const unknown = await cli(['cert', 'show', 'nobody'])
    assert.equal(unknown.code, 66)
    assert.match(unknown.stderr, /No certificate named "nobody"/)

    const usage = await cli(['cert', 'issue', 'x'])
    assert.equal(usage.code, 2)
    assert.match(usage.stderr, /^Error: Missing required flag type\nTry this: mq cert issue --help\n$/)

    const before = snapshot(join(h.dir, 'pki'))
    const bad = await cli(['cert', 'issue', 'web', '--type', 'server', '--san', 'IP:999.1.1.1', '--json'])
    assert.equal(bad.code, 65)
    assert.equal(JSON.parse(bad.stdout).error.code, 'E_BAD_SAN')
    const badName = await cli(['cert', 'issue', '../etc', '--type', 'client'])
    assert.equal(badName.code, 65)
    assert.deepEqual(snapshot(join(h.dir, 'pki')), before, 'bad input changed nothing on disk')

    const internal = await runCli(['cert', 'ca', 'init'], {home: '/dev/null/mq'})
    assert.equal(internal.code, 70)
    assert.match(internal.stderr, /internal error/)

    const lockedHome = tempHome()
    try {
      writeFileSync(join(lockedHome.dir, 'pass'), 'hunter2\n')
      assert.equal((await runCli(['cert', 'ca', 'init', '--passphrase-file', join(lockedHome.dir, 'pass')], {home: lockedHome.dir})).code, 0)
      const locked = await runCli(['cert', 'issue', 'a', '--type', 'client'], {env: {MQ_CA_PASSPHRASE: ''}, home: lockedHome.dir})
      assert.equal(locked.code, 77)
      assert.match(locked.stderr, /passphrase/)
      const unlocked = await runCli(['cert', 'issue', 'a', '--type', 'client', '--passphrase-file', join(lockedHome.dir, 'pass')], {home: lockedHome.dir})
      assert.equal(unlocked.code, 0, unlocked.stderr)
    } finally {
      lockedHome.cleanup()
    }
  })

  test('mq cert ca init --help says how the key passphrase is stretched', async () => {
    const r = await cli(['cert', 'ca', 'init', '--help'])
    assert.equal(r.code, 0)
    assert.match(r.stdout.replaceAll(/\s+/g, ' '), /scrypt \(N=2\^14, r=8, p=5/)
  })

  test('missing CA: a clear error naming the fix', async () => {
    const empty = tempHome()
    try {
      const r = await runCli(['cert', 'issue', 'a', '--type', 'client'], {home: empty.dir})
      assert.equal(r.code, 77)
      assert.match(r.stderr, /No certificate authority/)
      assert.match(r.stderr, /Try this: mq cert ca init/)
    } finally {
      empty.cleanup()
    }
  })
})
