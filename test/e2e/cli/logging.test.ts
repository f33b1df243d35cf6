/**
 * Servers log JSON lines with --log-format json (pino; a component on every line); text stays the default.
 * A client with --log-level debug says on stderr what it connects to and why it fails, and prints
 * nothing more on stdout.
 */
import assert from 'node:assert/strict'
import {after, before, describe, test} from 'node:test'

import {runCli, spawnUntilReady} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {freePort} from '../../helpers/services.js'

describe('log format and client debug logs', () => {
  const home = tempHome('mq-logging-')
  let port = 0
  let apiPort = 0
  let broker: Awaited<ReturnType<typeof spawnUntilReady>>

  before(async () => {
    port = await freePort()
    apiPort = await freePort()
    broker = await spawnUntilReady(['broker', 'start', '--port', String(port), '--api-port', String(apiPort), '--log-format', 'json'], {MQ_HOME: home.dir}, '"broker ready"')
  })
  after(async () => {
    await broker?.stop()
    home.cleanup()
  })

  test('mq broker start --log-format json: every stderr line is a JSON object with a component', async () => {
    // a client connects, so the broker's server component logs too
    assert.equal((await runCli(['queue', 'list', '--broker', `127.0.0.1:${port}`], {home: home.dir, env: {MQ_LOG_LEVEL: 'info'}})).code, 0)
    await broker.stop()
    const lines = broker.log().split('\n').filter(Boolean)
    assert.ok(lines.length >= 3, broker.log())
    const objs = lines.map((l) => {
      try {
        return JSON.parse(l) as {level: string; time: string; component?: string; msg: string}
      } catch {
        assert.fail(`not a JSON line: ${l}`)
      }
    })
    for (const o of objs) {
      assert.match(o.component ?? '', /^broker\b/, JSON.stringify(o))
      assert.ok(['error', 'warn', 'info', 'debug'].includes(o.level))
      assert.ok(!Number.isNaN(Date.parse(o.time)))
    }
    const ready = objs.find((o) => o.msg === 'broker ready') as unknown as {messaging: string; api: string}
    assert.equal(ready.messaging, `127.0.0.1:${port}`)
    // the first start's notes (CA created, export line) are log lines too, not free text
    assert.ok(objs.some((o) => /export MQ_HOME=/.test(o.msg)))
    assert.ok(objs.some((o) => o.msg === 'shutting down'))
    // restart in the default format for the next test: text lines
    broker = await spawnUntilReady(['broker', 'start', '--port', String(port), '--api-port', String(apiPort)], {MQ_HOME: home.dir}, 'broker ready')
    assert.match(broker.log(), /^\S+Z INFO {2}\[broker\] broker ready /m)
  })

  test('a client with --log-level debug: its target and identity on stderr, stdout unchanged', async () => {
    const plain = await runCli(['queue', 'list', '--broker', `127.0.0.1:${port}`], {home: home.dir})
    const debug = await runCli(['queue', 'list', '--broker', `127.0.0.1:${port}`, '--log-level', 'debug'], {home: home.dir})
    assert.equal(debug.code, 0, debug.stderr)
    assert.equal(debug.stdout, plain.stdout)
    assert.match(debug.stderr, new RegExp(`DEBUG \\[client\\] connecting to the broker host=127\\.0\\.0\\.1 identity=admin port=${port} source=--broker`))
    assert.match(debug.stderr, new RegExp(`DEBUG \\[client\\] client identity ca=${home.dir}/pki/ca\\.crt cert=${home.dir}/pki/issued/admin\\.crt .*key=${home.dir}/pki/issued/admin\\.key`))
    // an API command says which URL
    const api = await runCli(['client', 'list', '--api', `https://127.0.0.1:${apiPort}`, '--log-level', 'debug', '--json'], {home: home.dir})
    assert.equal(api.code, 0, api.stderr)
    assert.ok(Array.isArray(JSON.parse(api.stdout)))
    assert.match(api.stderr, new RegExp(`connecting to the API timeout_ms=\\d+ url=https://127\\.0\\.0\\.1:${apiPort}`))
  })

  test('a client with --log-level debug says why it failed; with --log-format json those lines are JSON', async () => {
    const dead = await freePort()
    const r = await runCli(['queue', 'list', '--broker', `127.0.0.1:${dead}`, '--log-level', 'debug', '--log-format', 'json'], {home: home.dir})
    assert.equal(r.code, 69)
    assert.equal(r.stdout, '')
    const objs = r.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l))
    const failed = objs.find((o) => o.msg === 'broker connection failed')
    assert.equal(failed.component, 'client')
    assert.equal(failed.port, dead)
    assert.equal(failed.code, 'E_BROKER_UNREACHABLE')
    assert.match(failed.reason, /connection refused/)
    // the error itself is the last line, typed
    const last = objs.at(-1)
    assert.equal(last.level, 'error')
    assert.equal(last.code, 'E_BROKER_UNREACHABLE')
    assert.equal(last.exit, 69)
  })
})
