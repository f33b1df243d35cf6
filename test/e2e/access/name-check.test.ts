/**
 * One name check for every identity, recipient and key name: `--identity ../../x` (or MQ_IDENTITY,
 * --from, --to, --as, a key or certificate name) must never become a path outside $MQ_HOME. Each
 * command refuses it with exit 65 and a clear message, before reading any file.
 */
import assert from 'node:assert/strict'
import {copyFileSync, mkdirSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {testPki} from '../../helpers/pki.js'
import {freePort} from '../../helpers/services.js'

describe('names never become paths outside MQ_HOME', () => {
  const t = tempHome('mq-names-')
  const home = join(t.dir, 'a', 'b', 'home')
  let env: NodeJS.ProcessEnv
  before(async () => {
    mkdirSync(home, {recursive: true})
    const {home: h} = await testPki(home, {clients: ['admin']})
    // a valid client certificate planted OUTSIDE the home, where "../../x" points from pki/issued/
    copyFileSync(h.issuedCert('admin'), join(home, 'x.crt'))
    copyFileSync(h.issuedKey('admin'), join(home, 'x.key'))
    env = {MQ_API: `https://127.0.0.1:${await freePort()}`, MQ_BROKER: `127.0.0.1:${await freePort()}`, MQ_HOME: home}
  })
  after(() => t.cleanup())

  const refused = (r: {code: number; stderr: string; stdout: string}, name: string) => {
    assert.equal(r.code, 65, `${r.stdout}${r.stderr}`)
    assert.ok(r.stderr.includes(`Invalid identity name ${JSON.stringify(name)}`), r.stderr)
  }

  for (const args of [
    ['queue', 'list'],
    ['stats'],
    ['message', 'list'],
    ['recv', '--queue', 'q', '--accept', 'plain'],
    ['send', '--queue', 'q', '--plain', 'hello'],
  ]) {
    test(`mq ${args.join(' ')} --identity ../../x: exit 65`, async () => {
      refused(await runCli([...args, '--identity', '../../x'], {env}), '../../x')
    })
  }

  test('MQ_IDENTITY=../../x: the same check', async () => {
    refused(await runCli(['queue', 'list'], {env: {...env, MQ_IDENTITY: '../../x'}}), '../../x')
  })

  test('--from, --to and --as, key and certificate names: exit 65', async () => {
    refused(await runCli(['send', '--queue', 'q', '--from', '../../x', '--to', 'admin', 'hi'], {env}), '../../x')
    refused(await runCli(['send', '--queue', 'q', '--from', 'admin', '--to', '../etc/passwd', 'hi'], {env}), '../etc/passwd')
    refused(await runCli(['recv', '--queue', 'q', '--as', '../../x'], {env}), '../../x')
    refused(await runCli(['keys', 'publish', '../../x'], {env}), '../../x')
    refused(await runCli(['keygen', '../../x'], {env}), '../../x')
    refused(await runCli(['cert', 'issue', '../../x', '--type', 'client'], {env}), '../../x')
  })
})
