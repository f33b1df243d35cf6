/** The relay client's TLS identity: --identity like the broker commands, remembered from register. */
import assert from 'node:assert/strict'
import {cpSync} from 'node:fs'
import {test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {testPki} from '../../helpers/pki.js'
import {freePort} from '../../helpers/services.js'
import {spawnRelay} from './relay-process.js'

test('relay over TLS: register --identity ops, later commands keep using ops; a wrong --identity exits 77', async () => {
  const server = tempHome('mq-qa-relay-srv-')
  const client = tempHome('mq-qa-relay-cli-')
  let relay: Awaited<ReturnType<typeof spawnRelay>> | undefined
  try {
    // one CA for both homes: the client home is a copy with only the "ops" client certificate
    await testPki(server.dir, {clients: ['ops']})
    cpSync(`${server.dir}/pki`, `${client.dir}/pki`, {recursive: true})
    const tlsPort = await freePort()
    relay = await spawnRelay({args: ['--tls', '--port', String(await freePort())], env: {MQ_RELAY_TLS_PORT: String(tlsPort)}, home: server.dir})
    const reg = await runCli(['relay', 'register', 'ops', '--tls', '--identity', 'ops', '--relay', `127.0.0.1:${tlsPort}`, '--timeout', '10s'], {home: client.dir})
    assert.equal(reg.code, 0, reg.stderr)
    // no --tls, --relay or --identity: the registered address, TLS and certificate are used (this home has no "admin")
    const users = await runCli(['relay', 'users', '--json'], {home: client.dir})
    assert.equal(users.code, 0, users.stdout + users.stderr)
    assert.deepEqual(JSON.parse(users.stdout), {users: []})
    const wrong = await runCli(['relay', 'users', '--identity', 'nobody'], {home: client.dir})
    assert.equal(wrong.code, 77, wrong.stderr)
    assert.match(wrong.stderr, /No client certificate named "nobody" .*\(client certificates in this home: ops\)/)
  } finally {
    await relay?.stop()
    server.cleanup()
    client.cleanup()
  }
})
