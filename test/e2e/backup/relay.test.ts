import assert from 'node:assert/strict'
import {writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {freePort} from '../../helpers/services.js'
import {type RelayProcess, spawnRelay} from '../relay/relay-process.js'

const PASS = 'correct horse battery staple'

/**
 * `mq backup create` copies relay.db with SQLite's online backup API while the relay runs, which needs
 * the relay to leave its database open to a second connection (a relay holding relay.db with
 * locking_mode = EXCLUSIVE made this backup fail with exit 70).
 */
describe('mq backup of a home whose relay is running', () => {
  const server = tempHome('mq-backup-relay-srv-')
  const a = tempHome('mq-backup-relay-a-')
  const b = tempHome('mq-backup-relay-b-')
  const work = tempHome('mq-backup-relay-work-')
  const target = tempHome('mq-backup-relay-restored-')
  const archive = join(work.dir, 'relay.mqb')
  const passFile = join(work.dir, 'pass')
  let relay: RelayProcess | undefined
  let restored: RelayProcess | undefined

  before(() => writeFileSync(passFile, PASS + '\n', {mode: 0o600}))
  after(async () => {
    await relay?.stop()
    await restored?.stop()
    for (const h of [server, a, b, work, target]) h.cleanup()
  })

  const mq = (home: string, args: string[]) => runCli(['relay', ...args], {home})

  test('succeeds, and the restored relay delivers the text that was waiting in it', async () => {
    const port = await freePort()
    relay = await spawnRelay({args: ['--port', String(port)], home: server.dir})
    const addr = `127.0.0.1:${port}`
    assert.equal((await mq(a.dir, ['register', 'alice', '--relay', addr])).code, 0)
    assert.equal((await mq(b.dir, ['register', 'bob', '--relay', addr])).code, 0)
    assert.equal((await mq(a.dir, ['send-key', 'bob'])).code, 0)
    assert.equal((await mq(b.dir, ['fetch'])).code, 0)
    const text = 'backed up while the relay ran'
    assert.equal((await mq(a.dir, ['send', 'bob', '--text', text])).code, 0)

    const created = await runCli(['backup', 'create', archive, '--passphrase-file', passFile, '--json'], {home: server.dir})
    assert.equal(created.code, 0, created.stderr + created.stdout)
    assert.ok((JSON.parse(created.stdout) as {sqlite: string[]}).sqlite.includes('data/relay.db'), created.stdout)
    assert.equal(relay.proc.exitCode, null, 'the relay kept running through the backup')

    const verified = await runCli(['backup', 'verify', archive, '--json'], {env: {MQ_BACKUP_PASSPHRASE: PASS}})
    assert.equal(verified.code, 0, verified.stderr)
    assert.equal(JSON.parse(verified.stdout).ok, true)
    const r = await runCli(['backup', 'restore', archive, '--home', target.dir, '--passphrase-file', passFile, '--force'])
    assert.equal(r.code, 0, r.stderr + r.stdout)

    // the original relay still holds the text; the restored one, on its own port, delivers its copy
    const port2 = await freePort()
    restored = await spawnRelay({args: ['--port', String(port2)], home: target.dir})
    assert.match(restored.stderr(), /messages=1 .*users=2/)
    const f = await mq(b.dir, ['fetch', '--relay', `127.0.0.1:${port2}`])
    assert.equal(f.code, 0, f.stderr)
    assert.equal(f.stdout, `From: alice\nContent:\n${text}\n-----<EOM>-----\n`)
  })
})
