import assert from 'node:assert/strict'
import {existsSync, readFileSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

let broker: BrokerProcess
const xdg = tempHome('mq-xdg-')
const elsewhere = tempHome('mq-cwd-')

before(async () => {
  // the ports are in the home's config.yaml: a context naming only the home reaches this broker
  broker = await spawnBroker({portsInConfig: true})
})

after(async () => {
  await broker?.cleanup()
  xdg.cleanup()
  elsewhere.cleanup()
})

/** The CLI as a user's shell runs it: no MQ_* variables unless given, contexts under XDG_CONFIG_HOME. */
function mq(args: string[], env: NodeJS.ProcessEnv = {}) {
  const base: NodeJS.ProcessEnv = {...process.env}
  for (const k of Object.keys(base)) if (k.startsWith('MQ_')) delete base[k]
  return runCli(args, {cwd: elsewhere.dir, env: {...base, HOME: elsewhere.dir, XDG_CONFIG_HOME: xdg.dir, ...env}})
}
// runCli spreads process.env under env: make sure no MQ_* of the test runner leaks in
for (const k of Object.keys(process.env)) if (k.startsWith('MQ_')) delete process.env[k]

test('mq context add/use/list/remove: a context picks the home, broker and identity; precedence config file < context < env < flags', async () => {
  let r = await mq(['context', 'list'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stderr, /no contexts in .*mq\/contexts\.yaml/)

  r = await mq(['context', 'add', 'prod', '--home', broker.home, '--identity', 'admin', '--description', 'the test broker', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const file = join(xdg.dir, 'mq', 'contexts.yaml')
  assert.deepEqual(JSON.parse(r.stdout), {current: true, description: 'the test broker', file, home: broker.home, identity: 'admin', name: 'prod'})
  assert.equal(statSync(file).mode & 0o777, 0o600)
  assert.match(readFileSync(file, 'utf8'), /current: prod/)

  // the first context is current: a bare command reaches the broker through the context's home
  r = await mq(['queue', 'declare', 'via-context'])
  assert.equal(r.code, 0, r.stderr)
  r = await mq(['queue', 'list', '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.ok(JSON.parse(r.stdout).some((q: {name: string}) => q.name === 'via-context'))

  // a second context on the same home with a wrong broker address
  r = await mq(['context', 'add', 'broken', '--home', broker.home, '--broker', '127.0.0.1:1'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /context broken saved in .*; use it with mq context use broken or --context broken/)
  r = await mq(['queue', 'list', '--context', 'broken'])
  assert.equal(r.code, 69, 'the context beats the home config file')
  r = await mq(['queue', 'list', '--context', 'broken', '--json'], {MQ_BROKER: `127.0.0.1:${broker.port}`})
  assert.equal(r.code, 0, `the environment beats the context: ${r.stdout}`)
  r = await mq(['queue', 'list', '--context', 'broken', '--broker', `127.0.0.1:${broker.port}`])
  assert.equal(r.code, 0, `a flag beats the context: ${r.stderr}`)
  r = await mq(['config', 'show', '--context', 'broken', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const shown = JSON.parse(r.stdout)
  assert.equal(shown.home, broker.home)
  assert.equal(shown.client.broker, '127.0.0.1:1')
  assert.deepEqual(shown.origins['client.broker'], {source: 'context', where: `broken (${file})`})
  assert.equal(shown.origins['broker.port'].source, 'file')

  // use: the current context changes; MQ_CONTEXT overrides it per command
  r = await mq(['context', 'use', 'broken'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout, 'current context: broken\n')
  r = await mq(['queue', 'list'])
  assert.equal(r.code, 69)
  r = await mq(['queue', 'list', '--json'], {MQ_CONTEXT: 'prod'})
  assert.equal(r.code, 0, r.stdout)
  // MQ_HOME beats the context's home: an empty home has no admin identity
  r = await mq(['queue', 'list', '--context', 'prod'], {MQ_HOME: elsewhere.dir})
  assert.equal(r.code, 77)

  r = await mq(['context', 'list'])
  assert.match(r.stdout, /^\s+NAME +BROKER/)
  assert.match(r.stdout, /\n\* +broken +127\.0\.0\.1:1 /)
  assert.match(r.stdout, /\n +prod +admin +\S+ +the test broker/)
  r = await mq(['context', 'list', '--json'])
  const listed = JSON.parse(r.stdout)
  assert.equal(listed.current, 'broken')
  assert.deepEqual(listed.contexts.map((c: {name: string; current: boolean}) => [c.name, c.current]), [['broken', true], ['prod', false]])

  // an identity from a context
  r = await mq(['cert', 'issue', 'hana', '--type', 'client'], {MQ_HOME: broker.home})
  assert.equal(r.code, 0, r.stderr)
  r = await mq(['context', 'add', 'hana', '--home', broker.home, '--identity', 'hana'])
  assert.equal(r.code, 0, r.stderr)
  r = await mq(['queue', 'declare', 'not-hers', '--context', 'hana'])
  assert.equal(r.code, 77)
  assert.match(r.stderr, /hana may not declare queue not-hers/)

  // errors: unknown names, an existing one without --force, an empty context
  r = await mq(['context', 'use', 'nope'])
  assert.equal(r.code, 66)
  assert.match(r.stderr, /no context named "nope"/)
  assert.match(r.stderr, /Try this: one of broken, hana, prod/)
  r = await mq(['queue', 'list', '--context', 'nope', '--json'])
  assert.equal(r.code, 66)
  assert.equal(JSON.parse(r.stdout).error.code, 'E_NOT_FOUND')
  r = await mq(['context', 'add', 'prod', '--broker', 'x:1'])
  assert.equal(r.code, 1)
  assert.match(r.stderr, /a context named prod already exists/)
  r = await mq(['context', 'add', 'empty'])
  assert.equal(r.code, 2)
  r = await mq(['context', 'add', 'web', '--broker', 'https://x:5701'])
  assert.equal(r.code, 2)
  assert.match(r.stderr, /https:\/\/ is for the broker's HTTPS API/)

  // remove: removing the current one leaves none current, and commands fall back to the defaults
  r = await mq(['context', 'remove', 'broken', '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout), {current: null, removed: 'broken'})
  r = await mq(['config', 'show', '--json'])
  assert.equal(JSON.parse(r.stdout).home, join(elsewhere.dir, '.mq'))
  assert.ok(existsSync(file))

  // a current context edited out of the file by hand: commands say so (78), the context commands still work
  writeFileSync(file, 'current: ghost\ncontexts:\n  prod: {home: /tmp}\n')
  r = await mq(['queue', 'list'])
  assert.equal(r.code, 78)
  assert.match(r.stderr, /current context "ghost" is not defined/)
  r = await mq(['context', 'use', 'prod'])
  assert.equal(r.code, 0, r.stderr)
})
