import assert from 'node:assert/strict'
import {createServer, type Server, type Socket} from 'node:net'
import {after, before, test} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {CertificateAuthority} from '../../../src/lib/pki/index.js'
import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {freePort} from '../../helpers/services.js'
import {spawnMq} from '../pipeline/spawn.js'

const h = tempHome('mq-proxy-flags-')

before(async () => {
  await CertificateAuthority.open(new MqHome(h.dir), defaultConfig().pki).ensureDevelopment({clients: ['alice', 'proxy'], servers: ['proxy-server']})
})

after(() => h.cleanup())

test('mq proxy start takes the broker API URL as --api (as every other command); --broker is a deprecated alias', async () => {
  const api = 'https://127.0.0.1:59443'
  let p = await spawnMq(['proxy', 'start', '--home', h.dir, '--port', String(await freePort()), '--rate', '0', '--api', api], {}, 'proxy ready')
  try {
    assert.match(p.log(), new RegExp(`proxy ready.*${api.replaceAll('.', '\\.')}`))
    assert.doesNotMatch(p.log(), /deprecated/)
  } finally {
    await p.stop()
  }
  p = await spawnMq(['proxy', 'start', '--home', h.dir, '--port', String(await freePort()), '--rate', '0', '--broker', api], {}, 'proxy ready')
  try {
    assert.match(p.log(), /"--broker" flag has been deprecated\. Use "--api" instead/)
    assert.match(p.log(), new RegExp(`proxy ready.*${api.replaceAll('.', '\\.')}`))
  } finally {
    await p.stop()
  }
})

test('mq proxy send --timeout gives up on a proxy that never answers', async () => {
  // accepts TCP and then says nothing (not even the TLS handshake)
  const sockets: Socket[] = []
  const silent: Server = createServer((s) => sockets.push(s))
  const port = await new Promise<number>((r) => silent.listen(0, '127.0.0.1', () => r((silent.address() as {port: number}).port)))
  try {
    const r = await runCli(['proxy', 'send', `https://127.0.0.1:${port}`, '--home', h.dir, '--identity', 'alice', '--sender', '+4915200000000', '--timeout', '300ms', 'hi'], {timeoutMs: 8000})
    assert.notEqual(r.code, 0)
    assert.notEqual(r.code, 128, 'killed by the test timeout: --timeout was not applied')
    assert.match(r.stderr, /300 ms/)
    assert.equal(r.stdout, '')
    const bad = await runCli(['proxy', 'send', `https://127.0.0.1:${port}`, '--home', h.dir, '--sender', '+4915200000000', '--timeout', 'soon', 'hi'])
    assert.equal(bad.code, 2, bad.stderr)
    assert.match(bad.stderr, /--timeout/)
  } finally {
    for (const s of sockets) s.destroy()
    silent.close()
  }
})
