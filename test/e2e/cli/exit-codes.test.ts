/**
 * The README's exit-code table, held by every command: one code for "not found" (66) whatever is missing,
 * a connect timeout is 75, an oversize payload 65, the relay's missing identity and a missing CA 77, one
 * store flag name, and `mq recv --json` keeps its report lines off stdout. Each case drives the built CLI.
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync, writeFileSync} from 'node:fs'
import {createServer, type Server} from 'node:net'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {ROOT, runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

/** the {"error"} document of a --json run, after checking its exit code */
function jsonError(r: {code: number; stdout: string; stderr: string}, exit: number, what: string): {code: string; exit: number; message: string} {
  assert.equal(r.code, exit, `${what}: exit ${r.code}\n${r.stdout}${r.stderr}`)
  const lines = r.stdout.trim().split('\n')
  const e = JSON.parse(lines.at(-1)!).error
  assert.equal(e.exit, exit, `${what}: ${r.stdout}`)
  return e
}

describe('exit codes follow the README table on every command', {concurrency: 3}, () => {
  let broker: BrokerProcess
  const fresh = tempHome('mq-exit-fresh-')
  // a listener that accepts and never answers: what a client meets at a hung or wrong server
  let silent: Server
  let silentPort = 0
  const cli = (args: string[]) => runCli([...args, '--json'], {env: broker.cliEnv(), home: broker.home})

  before(async () => {
    // a small max_payload so "oversize" needs only a few KB
    broker = await spawnBroker({extraConfig: '  max_payload: 1024\n', portsInConfig: true})
    silent = createServer(() => {})
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    silentPort = (silent.address() as {port: number}).port
  })
  after(async () => {
    silent.close()
    await broker.cleanup()
    fresh.cleanup()
  })

  test('"not found" is exit 66 and E_NOT_FOUND for a queue, exchange, binding, message, client, certificate and user', async () => {
    assert.equal((await cli(['queue', 'declare', 'present'])).code, 0)
    const cases: [string, string[]][] = [
      ['queue delete', ['queue', 'delete', 'no-such-queue']],
      ['queue purge', ['queue', 'purge', 'no-such-queue']],
      ['exchange (bind)', ['queue', 'bind', 'present', '--exchange', 'no-such-exchange', '--routing-key', 'k']],
      ['exchange delete', ['exchange', 'delete', 'no-such-exchange']],
      ['queue peek', ['queue', 'peek', 'no-such-queue']],
      ['queue redrive', ['queue', 'redrive', 'no-such-queue.dlq']],
      ['binding (unbind)', ['queue', 'unbind', 'present', 'default_exchange', '--key', 'no-such-key']],
      ['cert renew', ['cert', 'renew', 'no-such-cert']],
      ['message status', ['message', 'status', 'no-such-message']],
      ['message view', ['message', 'view', 'no-such-message']],
      ['client revoke', ['client', 'revoke', 'no-such-client']],
      ['cert show', ['cert', 'show', 'no-such-cert']],
      ['cert revoke', ['cert', 'revoke', 'no-such-cert']],
      ['user delete', ['user', 'delete', 'nobody@example.com']],
    ]
    for (const [what, args] of cases) {
      const e = jsonError(await cli(args), 66, what)
      assert.equal(e.code, 'E_NOT_FOUND', `${what}: ${e.message}`)
    }
    // a recipient without keys is absent too: same exit, its own code
    assert.equal(jsonError(await cli(['keys', 'fetch', 'nobody']), 66, 'keys fetch').code, 'E_RECIPIENT_UNKNOWN')
    // and in text mode the same exit, with the error on stderr only
    const t = await runCli(['queue', 'delete', 'no-such-queue'], {env: broker.cliEnv(), home: broker.home})
    assert.equal(t.code, 66)
    assert.equal(t.stdout, '')
    assert.match(t.stderr, /^Error: queue "no-such-queue" does not exist\nTry this: mq queue declare no-such-queue\n$/)
  })

  test('a connect timeout is 75 (the broker port and the HTTPS API alike)', async () => {
    const q = jsonError(await cli(['queue', 'list', '--broker', `127.0.0.1:${silentPort}`, '--timeout', '1s']), 75, 'queue list')
    assert.equal(q.code, 'E_BROKER_TIMEOUT')
    const s = jsonError(await cli(['send', '--queue', 'present', '--plain', 'hi', '--broker', `127.0.0.1:${silentPort}`, '--timeout', '1s']), 75, 'send')
    assert.equal(s.code, 'E_BROKER_TIMEOUT')
    const h = jsonError(await cli(['broker', 'health', '--api', `https://127.0.0.1:${silentPort}`]), 75, 'broker health')
    assert.equal(h.code, 'E_API_TIMEOUT')
    assert.match(h.message, new RegExp(`^No answer from https://127.0.0.1:${silentPort} within \\d+ ms\\.$`))
  })

  test('an oversize payload is 65 (E_FRAME_TOO_LARGE), on every line of mq send --json', async () => {
    assert.equal((await cli(['queue', 'declare', 'big'])).code, 0)
    const file = join(broker.home, 'big.bin')
    writeFileSync(file, Buffer.alloc(4096, 1))
    const r = await cli(['send', '--queue', 'big', '--plain', '-f', file])
    const e = jsonError(r, 65, 'send oversize')
    assert.equal(e.code, 'E_FRAME_TOO_LARGE')
    for (const line of r.stdout.trim().split('\n')) assert.equal(JSON.parse(line).error.exit, 65, line)
  })

  test("the relay client's missing identity is 77 (E_RELAY_NOT_REGISTERED)", async () => {
    const r = await runCli(['relay', 'users', '--relay', `127.0.0.1:${silentPort}`, '--json'], {home: fresh.dir})
    assert.equal(jsonError(r, 77, 'relay users').code, 'E_RELAY_NOT_REGISTERED')
    const s = await runCli(['relay', 'send', 'bob', '--text', 'hi', '--relay', `127.0.0.1:${silentPort}`, '--json'], {home: fresh.dir})
    assert.equal(jsonError(s, 77, 'relay send').code, 'E_RELAY_NOT_REGISTERED')
  })

  test('a missing CA is 77 and E_CA_MISSING in every command', async () => {
    for (const args of [
      ['keygen', 'bob'],
      ['cert', 'issue', 'x', '--type', 'client'],
      ['cert', 'revoke', 'x'],
      ['queue', 'list', '--broker', `127.0.0.1:${silentPort}`],
      ['broker', 'health', '--api', `https://127.0.0.1:${silentPort}`],
      ['relay', 'users', '--tls', '--relay', `127.0.0.1:${silentPort}`],
    ]) {
      const r = await runCli([...args, '--json'], {home: fresh.dir})
      assert.equal(jsonError(r, 77, args.join(' ')).code, 'E_CA_MISSING', args.join(' '))
    }
  })

  test('the store URL flag is --store on every command (old names hidden)', async () => {
    const manifest = JSON.parse(readFileSync(join(ROOT, 'oclif.manifest.json'), 'utf8')) as {
      commands: Record<string, {flags: Record<string, {description?: string; hidden?: boolean; aliases?: string[]}>}>
    }
    const offenders: string[] = []
    for (const [id, c] of Object.entries(manifest.commands)) {
      for (const [name, f] of Object.entries(c.flags)) {
        if (f.hidden) continue
        if (/store/i.test(f.description ?? '') && /url/i.test(f.description ?? '') && name !== 'store') offenders.push(`${id} --${name}`)
        if (['url', 'store-url'].includes(name)) offenders.push(`${id} --${name}`)
      }
    }
    assert.deepEqual(offenders, [])
    for (const id of ['db:migrate', 'relay:bench', 'proxy:bench']) assert.ok(manifest.commands[id].flags.store, `${id} has --store`)
    // the old spelling still works, so scripts written against it do not break
    const db = join(fresh.dir, 'old-flag.db')
    const old = await runCli(['db', 'migrate', '--url', `sqlite://${db}`], {home: fresh.dir})
    assert.equal(old.code, 0, old.stderr)
    assert.ok(existsSync(db))
    assert.doesNotMatch((await runCli(['db', 'migrate', '--help'])).stdout, /--url/)
  })

  test('mq recv --json: a rejected message is a typed line on stderr; stdout holds messages and the final error only', async () => {
    assert.equal((await cli(['queue', 'declare', 'rq'])).code, 0)
    assert.equal((await cli(['send', '--queue', 'rq', '--plain', 'not encrypted'])).code, 0)
    const r = await cli(['recv', '--queue', 'rq', '--count', '1', '--timeout', '3s'])
    assert.equal(jsonError(r, 65, 'recv').code, 'E_RECV_REJECTED')
    assert.equal(r.stdout.trim().split('\n').length, 1, r.stdout)
    const report = r.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
    assert.equal(report.length, 1, r.stderr)
    assert.equal(report[0].rejected.code, 'E_FORMAT_REFUSED')
    assert.equal(report[0].rejected.queue, 'rq')
  })
})
