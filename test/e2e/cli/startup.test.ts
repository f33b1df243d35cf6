/**
 * Every CLI call starts a node process: a command that never builds or parses a certificate or a CRL
 * and writes no JSON log line does not load @peculiar/x509, node-forge or pino (together about a
 * third of a call's startup CPU). The packages a process loaded are read from its require cache at
 * exit, so this checks what ran, not a timing.
 */
import assert from 'node:assert/strict'
import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, describe, test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {testPki} from '../../helpers/pki.js'

const HEAVY = ['@peculiar/x509', 'node-forge', 'pino']

describe('CLI startup loads only what the command uses', () => {
  const home = tempHome('mq-startup-')
  const hook = join(home.dir, 'loaded-packages.cjs')
  writeFileSync(
    hook,
    `process.on('exit', () => require('node:fs').writeFileSync(process.env.MQ_TEST_LOADED, JSON.stringify(Object.keys(require.cache))))\n`,
  )
  after(() => home.cleanup())

  const loaded = async (name: string, args: string[], mqHome = join(home.dir, name)): Promise<{code: number; stderr: string; packages: string[]}> => {
    const out = join(home.dir, `${name}.json`)
    const r = await runCli(args, {env: {MQ_TEST_LOADED: out, NODE_OPTIONS: `--require ${hook}`}, home: mqHome})
    const files = JSON.parse(readFileSync(out, 'utf8')) as string[]
    return {...r, packages: HEAVY.filter((p) => files.some((f) => f.includes(`/node_modules/${p}/`)))}
  }

  test('mq config show: none of them', async () => {
    const r = await loaded('config', ['config', 'show'])
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(r.packages, [])
  })

  test('mq send and mq queue list without a CA: the usual error, none of them', async () => {
    for (const [name, args] of [['send', ['send', '--queue', 'q', '--plain', 'hi', '--broker', '127.0.0.1:9']], ['list', ['queue', 'list', '--broker', '127.0.0.1:9']]] as const) {
      const r = await loaded(name, [...args])
      assert.match(r.stderr, /No CA certificate at /)
      assert.deepEqual(r.packages, [], name)
    }
  })

  test('a client with a CA, its certificate and a CRL reads them all without them; a damaged CRL is still exit 65 naming it', async () => {
    const dir = join(home.dir, 'pki-home')
    const {ca} = await testPki(dir, {clients: ['admin']})
    await ca.publishCrl()
    const run = (name: string) => loaded(name, ['queue', 'list', '--broker', '127.0.0.1:9'], dir)
    // the TLS options are built (certificate, key, CA, CRL) and then the connection is refused
    const ok = await run('tls')
    assert.match(ok.stderr, /127\.0\.0\.1:9/)
    assert.doesNotMatch(ok.stderr, /crl\.pem/)
    assert.deepEqual(ok.packages, [])
    writeFileSync(join(dir, 'pki', 'crl.pem'), '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n')
    const bad = await run('badcrl')
    assert.equal(bad.code, 65, bad.stderr)
    assert.match(bad.stderr, /crl\.pem is not a valid CRL: its contents do not decode as a CRL/)
  })

  test('with --log-format json the lines still come from pino, which loads for them', async () => {
    const r = await loaded('json', ['queue', 'list', '--broker', '127.0.0.1:9', '--log-format', 'json', '--log-level', 'debug'])
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as {level: string; msg: string; pid: number})
    assert.ok(lines.some((l) => l.msg === 'client identity' && l.level === 'debug' && typeof l.pid === 'number'), r.stderr)
    assert.deepEqual(r.packages, ['pino'])
  })
})
