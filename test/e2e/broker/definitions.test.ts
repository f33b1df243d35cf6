import assert from 'node:assert/strict'
import {existsSync, readFileSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

let source: BrokerProcess
let target: BrokerProcess
const files = tempHome('mq-defs-')

before(async () => {
  ;[source, target] = await Promise.all([spawnBroker(), spawnBroker()])
})

after(async () => {
  await Promise.all([source?.cleanup(), target?.cleanup()])
  files.cleanup()
})

const on = (b: BrokerProcess) => (args: string[]) => runCli(args, {env: b.cliEnv()})

test('mq definitions: export from one broker, import into a fresh one, export again: the same bytes; a second import changes nothing', async () => {
  const src = on(source)
  for (const args of [
    ['exchange', 'declare', 'shop', '--type', 'topic'],
    ['exchange', 'declare', 'broadcast', '--type', 'fanout'],
    ['exchange', 'declare', 'scratch', '--transient'],
    ['queue', 'declare', 'orders', '--ttl', '1m', '--max-length', '5000'],
    ['queue', 'declare', 'payments', '--dead-letter', 'payments.failed'],
    ['queue', 'declare', 'cache', '--transient'],
    ['queue', 'bind', 'orders', '--exchange', 'shop', '--routing-key', 'order.#'],
    ['queue', 'bind', 'payments', '--exchange', 'shop', '--routing-key', 'payment.*'],
    ['queue', 'bind', 'cache', '--exchange', 'broadcast'],
  ]) {
    const r = await src(args)
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`)
  }
  const first = join(files.dir, 'first.json')
  let r = await src(['definitions', 'export', first, '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout), {bindings: 4, exchanges: 4, file: first, permissions: 5, queues: 8})
  assert.equal(statSync(first).mode & 0o777, 0o600)
  const defs = JSON.parse(readFileSync(first, 'utf8'))
  assert.equal(defs.mq_definitions, 1)
  assert.deepEqual(defs.queues.find((q: {name: string}) => q.name === 'orders'), {dead_letter: null, durable: true, max_length: 5000, name: 'orders', ttl_ms: 60_000})
  assert.deepEqual(defs.queues.find((q: {name: string}) => q.name === 'payments'), {dead_letter: 'payments.failed', durable: true, max_length: null, name: 'payments', ttl_ms: null})
  assert.equal(defs.queues.find((q: {name: string}) => q.name === 'cache').durable, false)
  assert.ok(defs.queues.some((q: {name: string}) => q.name === 'orders.dlq'))
  assert.ok(!defs.queues.some((q: {name: string}) => q.name === 'payments.failed.dlq'))
  assert.equal(defs.exchanges.find((e: {name: string}) => e.name === 'scratch').durable, false)
  assert.ok(defs.permissions.some((p: {identity: string; admin: boolean}) => p.identity === 'admin' && p.admin))

  // stdout form: the same document, also as '-' (which once wrote a file named '-' in the working directory)
  r = await src(['definitions', 'export'])
  assert.equal(r.stdout, readFileSync(first, 'utf8'))
  r = await runCli(['definitions', 'export', '-'], {cwd: files.dir, env: source.cliEnv()})
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout, readFileSync(first, 'utf8'))
  assert.ok(!existsSync(join(files.dir, '-')), "export - wrote a file named '-'")

  const dst = on(target)
  r = await dst(['definitions', 'import', first, '--json'])
  assert.equal(r.code, 0, r.stderr)
  const rep = JSON.parse(r.stdout)
  // the fresh broker has default_exchange, default_queue (+ its .dlq) and one binding of its own
  assert.deepEqual(rep.exchanges, {created: 3, unchanged: 1})
  assert.deepEqual(rep.queues, {created: 6, unchanged: 2})
  assert.deepEqual(rep.bindings, {created: 3, unchanged: 1})
  assert.equal(rep.permissions_match, true)
  assert.equal(r.stderr, '')

  const second = join(files.dir, 'second.json')
  r = await dst(['definitions', 'export', second])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(readFileSync(second, 'utf8'), readFileSync(first, 'utf8'))

  r = await dst(['definitions', 'import', first])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /exchanges 0 created, 4 unchanged; queues 0 created, 8 unchanged; bindings 0 created, 4 unchanged/)
  // '-' reads standard input: export - | import - between brokers
  r = await runCli(['definitions', 'import', '-'], {env: target.cliEnv(), input: readFileSync(first)})
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /imported -: exchanges 0 created, 4 unchanged/)

  // the imported definitions route: a publish to shop reaches orders on the target
  const c = await target.connect()
  assert.deepEqual((await c.publish('shop', 'order.created', Buffer.from('x'))).queues, ['orders'])
  await c.close()
})

test('mq definitions import: conflicts are all reported and nothing is changed; a malformed file is exit 65 naming it; permissions that differ are printed as YAML', async () => {
  const dst = on(target)
  const file = join(files.dir, 'conflict.json')
  writeFileSync(
    file,
    JSON.stringify({
      bindings: [{exchange: 'ghost', queue: 'fresh', routing_key: 'k'}],
      exchanges: [{durable: true, name: 'shop', type: 'direct'}, {durable: true, name: 'newx', type: 'direct'}],
      mq_definitions: 1,
      queues: [{dead_letter: null, durable: true, max_length: 10, name: 'orders', ttl_ms: 60_000}, {dead_letter: null, durable: true, max_length: null, name: 'fresh', ttl_ms: null}],
    }),
  )
  let r = await dst(['definitions', 'import', file])
  assert.equal(r.code, 1)
  assert.match(r.stderr, /nothing was changed/)
  assert.match(r.stderr, /exchange shop: type topic on the broker, direct in the file/)
  assert.match(r.stderr, /queue orders: max_length 5000 on the broker, 10 in the file/)
  assert.match(r.stderr, /exchange ghost is neither in the file nor on the broker/)
  r = await dst(['exchange', 'list', '--json'])
  assert.ok(!JSON.parse(r.stdout).exchanges.some((e: {name: string}) => e.name === 'newx'))

  const bad = join(files.dir, 'bad.json')
  writeFileSync(bad, '{"mq_definitions": 1, "queues": [{"name": "x"}]}')
  r = await dst(['definitions', 'import', bad, '--json'])
  assert.equal(r.code, 65)
  const err = JSON.parse(r.stdout).error
  assert.equal(err.code, 'E_BAD_DEFINITIONS')
  assert.ok(err.message.startsWith(`${bad}: queues.0.durable`), err.message)
  writeFileSync(bad, 'not json')
  r = await dst(['definitions', 'import', bad])
  assert.equal(r.code, 65)
  assert.match(r.stderr, /bad\.json is not JSON/)

  const perms = join(files.dir, 'perms.json')
  writeFileSync(perms, JSON.stringify({mq_definitions: 1, permissions: [{identity: 'ops', monitor: true}]}))
  r = await dst(['definitions', 'import', perms, '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(JSON.parse(r.stdout).permissions_match, false)
  assert.match(r.stderr, /differ from the broker's broker.permissions/)
  assert.match(r.stderr, /broker:\n {2}permissions:\n {4}- identity: ops\n {6}admin: false\n {6}monitor: true/)

  // the broker's own rules written by hand, defaults left out and keys in another order: they match
  const same = join(files.dir, 'same.json')
  writeFileSync(same, JSON.stringify({mq_definitions: 1, permissions: [
    {admin: true, consume: ['*'], identity: 'admin', monitor: true, publish: ['*'], roles: ['admin']},
    {identity: 'proxy*', publish: ['*'], roles: ['proxy']},
    {identity: 'worker*', publish: ['*'], roles: ['worker']},
    {consume: [], identity: 'portal', monitor: true, publish: [], roles: []},
    {identity: '*', publish: ['*']},
  ]}))
  r = await dst(['definitions', 'import', same, '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(JSON.parse(r.stdout).permissions_match, true, r.stderr)
  writeFileSync(same, JSON.stringify({mq_definitions: 1, permissions: [{identity: 'x', admn: true}]}))
  r = await dst(['definitions', 'import', same])
  assert.equal(r.code, 65)
  assert.match(r.stderr, /permissions\.0: Unrecognized key\(s\) in object: 'admn'/)
})

test('mq definitions export and import are admin only', async () => {
  let r = await on(source)(['cert', 'issue', 'frank', '--type', 'client'])
  assert.equal(r.code, 0, r.stderr)
  r = await on(source)(['definitions', 'export', '--identity', 'frank'])
  assert.equal(r.code, 77)
  assert.match(r.stderr, /frank may not export definitions: it needs admin/)
})
