import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {freePort} from '../../helpers/services.js'

let broker: BrokerProcess

before(async () => {
  broker = await spawnBroker()
})

after(async () => {
  await broker?.cleanup()
})

const lockFile = () => join(broker.home, 'data', 'broker.lock')

test('a second broker on the same home refuses to start, naming the pid that holds the data directory', async () => {
  assert.equal(readFileSync(lockFile(), 'utf8').trim(), String(broker.proc.pid))
  const r = await runCli(['broker', 'start', '--home', broker.home, '--port', String(await freePort()), '--api-port', String(await freePort())], {timeoutMs: 60_000})
  assert.equal(r.code, 75, r.stderr)
  assert.match(r.stderr, new RegExp(`another broker \\(pid ${broker.proc.pid}\\)`))
  assert.match(r.stderr, /Try this: /)
  assert.doesNotMatch(r.stderr, /broker ready/)
  // the first broker still owns the lock and still serves
  assert.equal(readFileSync(lockFile(), 'utf8').trim(), String(broker.proc.pid))
  const q = await runCli(['queue', 'list', '--json'], {env: broker.cliEnv()})
  assert.equal(q.code, 0, q.stderr)
})

test('a kill -9 leaves a stale lock that the next start takes over; a clean stop removes it', async () => {
  const oldPid = broker.proc.pid
  await broker.kill9()
  assert.ok(existsSync(lockFile()), 'kill -9 cannot remove the lock')
  await broker.restart()
  assert.notEqual(broker.proc.pid, oldPid)
  assert.equal(readFileSync(lockFile(), 'utf8').trim(), String(broker.proc.pid))
  await broker.stop()
  assert.equal(existsSync(lockFile()), false)
})
