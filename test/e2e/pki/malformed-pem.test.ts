/** A damaged key, certificate or CRL is bad input (exit 65) naming the file and what is wrong, not "internal error" (70). */
import assert from 'node:assert/strict'
import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

describe('malformed PEM files', () => {
  const h = tempHome()
  const cli = (args: string[]) => runCli(args, {env: {MQ_BROKER: '127.0.0.1:9'}, home: h.dir})
  /** damages FILE with CONTENT for the duration of FN, then restores it */
  const damaged = async (file: string, content: string, fn: () => Promise<void>) => {
    const good = readFileSync(file)
    writeFileSync(file, content, {mode: 0o600})
    try {
      await fn()
    } finally {
      writeFileSync(file, good)
    }
  }
  const expect65 = (r: {code: number; stderr: string; stdout: string}, file: string, what: RegExp) => {
    assert.equal(r.code, 65, r.stderr + r.stdout)
    assert.ok(r.stderr.includes(file), r.stderr)
    assert.match(r.stderr, what)
    assert.doesNotMatch(r.stderr, /internal error/)
  }

  before(async () => {
    for (const args of [['cert', 'ca', 'init'], ['cert', 'issue', 'admin', '--type', 'client'], ['cert', 'issue', 'broker', '--type', 'server'], ['keygen', 'alice']]) {
      const r = await cli(args)
      assert.equal(r.code, 0, r.stderr)
    }
  })
  after(() => h.cleanup())

  test('an end-to-end private key that is not PEM: send names keys/alice.key', async () => {
    const f = join(h.dir, 'keys', 'alice.key')
    await damaged(f, 'garbage\n', async () => expect65(await cli(['send', '--queue', 'q', '--from', 'alice', '--to', 'alice', 'hi']), f, /is not a valid private key: no PEM block/))
  })

  test('a truncated end-to-end certificate', async () => {
    const f = join(h.dir, 'keys', 'alice.crt')
    await damaged(f, readFileSync(f, 'utf8').slice(0, 300), async () => expect65(await cli(['send', '--queue', 'q', '--from', 'alice', '--to', 'alice', 'hi']), f, /is not a valid certificate: the PEM block is cut short/))
  })

  test('a TLS client certificate that is not PEM: queue list names pki/issued/admin.crt', async () => {
    const f = join(h.dir, 'pki', 'issued', 'admin.crt')
    await damaged(f, 'junk\n', async () => expect65(await cli(['queue', 'list']), f, /is not a valid certificate/))
  })

  test('a CRL whose contents do not decode: the client and the broker at start name pki/crl.pem', async () => {
    const f = join(h.dir, 'pki', 'crl.pem')
    await damaged(f, '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n', async () => {
      expect65(await cli(['queue', 'list']), f, /is not a valid CRL: its contents do not decode as a CRL/)
      expect65(await cli(['broker', 'start', '--port', '47991', '--api-port', '47992']), f, /is not a valid CRL/)
    })
  })

  test('a server key that is not a key: broker start names pki/issued/broker.key', async () => {
    const f = join(h.dir, 'pki', 'issued', 'broker.key')
    await damaged(f, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', async () => expect65(await cli(['broker', 'start', '--port', '47991', '--api-port', '47992']), f, /is not a valid private key: the PEM block is not a private key \(CERTIFICATE\)/))
  })
})
