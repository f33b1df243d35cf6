/** Issue 20, ports and addresses: a home moved to other ports in one key per port, clients follow it. */
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {BIN, ROOT, runCli} from '../../helpers/cli.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {tempHome} from '../../helpers/home.js'
import {testPki} from '../../helpers/pki.js'
import {freePort} from '../../helpers/services.js'
import {spawnRelay} from '../relay/relay-process.js'

test('mq config show: client.broker and client.api follow broker.port and broker.api_port, with where each value came from', async () => {
  const h = tempHome()
  try {
    writeFileSync(join(h.dir, 'config.yaml'), 'broker:\n  port: 19700\n  api_port: 19701\n')
    const j = await runCli(['config', 'show', '--json'], {env: {MQ_CLIENT_TIMEOUT_MS: '3000'}, home: h.dir})
    assert.equal(j.code, 0, j.stderr)
    const out = JSON.parse(j.stdout)
    assert.equal(out.client.broker, '127.0.0.1:19700')
    assert.equal(out.client.api, 'https://127.0.0.1:19701')
    assert.equal(out.worker.metrics_port, 5709, 'not 9100, node_exporter\'s port')
    assert.deepEqual(out.origins['broker.port'], {source: 'file', where: `${join(h.dir, 'config.yaml')}:2`})
    assert.deepEqual(out.origins['client.timeout_ms'], {source: 'env', where: 'MQ_CLIENT_TIMEOUT_MS'})
    assert.equal(out.origins['client.broker'].source, 'default')
    assert.match(out.origins['client.broker'].where, /broker\.port/)
    assert.equal(out.origins['pki.key_bits'].source, 'default')
    const f = await runCli(['config', 'show', '--json', '--broker', '10.0.0.5:6000'], {home: h.dir})
    assert.equal(JSON.parse(f.stdout).client.broker, '10.0.0.5:6000')
    assert.deepEqual(JSON.parse(f.stdout).origins['client.broker'], {source: 'flag'})
    const t = await runCli(['config', 'show'], {home: h.dir})
    assert.match(t.stdout, /^broker\.port\s+19700\s+file .*config\.yaml:2$/m)
    assert.match(t.stdout, /^client\.relay\s+\(unset\)\s+default$/m)
    // an explicit client.broker still wins
    writeFileSync(join(h.dir, 'config.yaml'), 'broker:\n  port: 19700\nclient:\n  broker: 10.1.1.1:7000\n')
    const e = await runCli(['config', 'show', '--json'], {home: h.dir})
    assert.equal(JSON.parse(e.stdout).client.broker, '10.1.1.1:7000')
  } finally {
    h.cleanup()
  }
})

describe('a broker on non-default ports from config.yaml', () => {
  let b: BrokerProcess
  before(async () => {
    b = await spawnBroker({extraConfig: '  max_connections: 2\n', portsInConfig: true})
  })
  after(async () => {
    await b?.cleanup()
  })
  const cli = (args: string[]) => runCli(args, {env: {MQ_BROKER: undefined, MQ_API: undefined}, home: b.home})

  test('clients need no flag; --broker takes HOST, HOST:PORT and mq(s)://HOST:PORT; other schemes are refused quoting the configured port', async () => {
    for (const args of [[], ['--broker', '127.0.0.1'], ['--broker', `127.0.0.1:${b.port}`], ['--broker', `mqs://127.0.0.1:${b.port}`], ['--broker', `mq://localhost:${b.port}/`]]) {
      const r = await cli(['queue', 'list', '--json', ...args])
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stdout}${r.stderr}`)
      assert.ok(JSON.parse(r.stdout).some((q: {name: string}) => q.name === 'default_queue'))
    }
    const h = await cli(['broker', 'health', '--json'])
    assert.equal(h.code, 0, h.stderr)
    const bad = await cli(['queue', 'list', '--broker', `https://127.0.0.1:${b.apiPort}`])
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /https:\/\/ is for the broker's HTTPS API/)
    assert.match(bad.stderr, new RegExp(`--broker HOST:${b.port}`))
    assert.doesNotMatch(bad.stderr, /5700/)
    const nats = await cli(['queue', 'list', '--broker', 'nats://127.0.0.1:4222'])
    assert.equal(nats.code, 2)
    assert.match(nats.stderr, /nats:\/\/ is not an mq broker address/)
  })

  test('a client pointed at the API port, or broker health at the messaging port, is told which port is which (exit 69)', async () => {
    const r = await cli(['queue', 'list', '--broker', `127.0.0.1:${b.apiPort}`])
    assert.equal(r.code, 69, r.stderr)
    assert.match(r.stderr, new RegExp(`that port is the broker's API port \\(broker\\.api_port\\); the messaging port is ${b.port}`))
    const h = await cli(['broker', 'health', '--api', `https://127.0.0.1:${b.port}`])
    assert.equal(h.code, 69, h.stderr)
    assert.match(h.stderr, new RegExp(`that port is the broker's messaging port \\(broker\\.port\\); the API port is ${b.apiPort}`))
    const j = await cli(['queue', 'list', '--json', '--broker', `127.0.0.1:${b.apiPort}`])
    assert.equal(JSON.parse(j.stdout).error.code, 'E_WRONG_SERVICE')
  })

  test('--log-level debug shows what a client connects to and why it fails', async () => {
    const r = await cli(['queue', 'list', '--log-level', 'debug', '--broker', `127.0.0.1:${b.apiPort}`])
    assert.match(r.stderr, new RegExp(`connecting to the broker host=127\\.0\\.0\\.1 identity=admin port=${b.apiPort} source=--broker`))
    assert.match(r.stderr, /broker connection failed code=E_WRONG_SERVICE/)
  })

  test('a broker at broker.max_connections: E_TOO_MANY_CONNECTIONS, exit 75, naming the key', async () => {
    const held = [await b.connect(), await b.connect()]
    try {
      const r = await cli(['queue', 'list'])
      assert.equal(r.code, 75, r.stderr)
      assert.match(r.stderr, /is full/)
      assert.match(r.stderr, /broker\.max_connections/)
      assert.doesNotMatch(r.stderr, /revoked/)
      const j = await cli(['queue', 'list', '--json'])
      assert.equal(JSON.parse(j.stdout).error.code, 'E_TOO_MANY_CONNECTIONS')
    } finally {
      for (const c of held) await c.close()
    }
  })
})

test('broker start on first start prints the export lines for a client shell, and a spinner on a TTY while it creates the CA', async () => {
  const h = tempHome()
  const [port, api] = [await freePort(), await freePort()]
  try {
    // `script` gives the broker a pseudo-terminal, as a user's shell would
    const cmd = `stty cols 120 rows 40; ${process.execPath} ${BIN} broker start --home ${h.dir} --port ${port} --api-port ${api}`
    const proc = spawn('script', ['-qfec', cmd, '/dev/null'], {cwd: ROOT, env: {...process.env, NO_COLOR: '1'}, stdio: ['pipe', 'pipe', 'pipe']})
    let out = ''
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no broker ready:\n${out}`)), 90_000)
      proc.stdout.on('data', () => {
        if (/broker ready/.test(out)) {
          clearTimeout(t)
          resolve()
        }
      })
    })
    // script passes no signal on to its child: stop the broker by the pid in its data lock
    process.kill(Number(readFileSync(join(h.dir, 'data', 'broker.lock'), 'utf8').trim()), 'SIGTERM')
    assert.match(out, /Creating a development CA/)
    assert.match(out, new RegExp(`export MQ_HOME=${h.dir} MQ_BROKER=127\\.0\\.0\\.1:${port} MQ_API=https://127\\.0\\.0\\.1:${api}`))
    await new Promise((r) => proc.once('close', r))
  } finally {
    h.cleanup()
  }
})

test('mq relay register/users --tls use relay.tls.port of the home', async () => {
  const h = tempHome()
  let relay: Awaited<ReturnType<typeof spawnRelay>> | undefined
  try {
    await testPki(h.dir, {clients: ['admin']})
    const [plain, tls] = [await freePort(), await freePort()]
    writeFileSync(join(h.dir, 'config.yaml'), `relay:\n  port: ${plain}\n  tls:\n    port: ${tls}\n`)
    relay = await spawnRelay({args: ['--tls'], home: h.dir})
    const reg = await runCli(['relay', 'register', 'alice', '--tls', '--timeout', '10s'], {env: {MQ_RELAY: undefined}, home: h.dir})
    assert.equal(reg.code, 0, reg.stdout + reg.stderr)
    const users = await runCli(['relay', 'users', '--tls', '--json'], {env: {MQ_RELAY: undefined}, home: h.dir})
    assert.equal(users.code, 0, users.stdout + users.stderr)
    assert.doesNotMatch(users.stderr, /wrong version number/)
  } finally {
    await relay?.stop()
    h.cleanup()
  }
})

test('every bench takes a port: mq relay bench --port', async () => {
  const port = await freePort()
  const r = await runCli(['relay', 'bench', '--port', String(port), '--messages', '50', '--file-mib', '1', '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(JSON.parse(r.stdout).relay, `127.0.0.1:${port}`)
})
