import assert from 'node:assert/strict'
import {join} from 'node:path'
import * as tls from 'node:tls'
import {test} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {configSchema} from '../../../src/lib/config/schema.js'
import {CertificateAuthority, clientTlsOptions, serverTlsOptions} from '../../../src/lib/pki/index.js'
import {RelayServer} from '../../../src/lib/relay/server.js'
import {RelayClient} from '../../../src/lib/relay/service.js'
import {RelayStore} from '../../../src/lib/relay/store.js'
import {tempHome} from '../../helpers/home.js'

test('the relay\'s mutual-TLS listener serves clients with our certificates and refuses others', async () => {
  const h = tempHome('mq-relay-tls-')
  const home = new MqHome(h.dir)
  let store: RelayStore | undefined
  let server: RelayServer | undefined
  try {
    store = await RelayStore.open({dataDir: home.data, url: 'sqlite'})
    await CertificateAuthority.open(home, configSchema.parse({}).pki).ensureDevelopment({clients: ['alice'], servers: ['relay']})
    server = new RelayServer({
      filesDir: join(home.data, 'relay-files'),
      host: '127.0.0.1',
      idleTimeoutMs: 5000,
      maxFileBytes: 1 << 20,
      maxTextBytes: 1 << 16,
      port: 0,
      store,
      tls: {options: serverTlsOptions(home, 'relay'), port: 0},
    })
    await server.start()
    const client = new RelayClient(home, {host: '127.0.0.1', port: server.tlsPort}, {tls: clientTlsOptions(home, 'alice'), timeoutMs: 5000})
    try {
      const r = await client.register('tls-alice', 'strong')
      assert.equal(r.protocol, 3)
      assert.deepEqual(await client.users(), [])
    } finally {
      client.close()
    }
    // no client certificate: the handshake (or the first read) fails
    const refused = await new Promise<boolean>((resolve) => {
      const s = tls.connect({ca: clientTlsOptions(home, 'alice').ca, checkServerIdentity: () => undefined, host: '127.0.0.1', port: server!.tlsPort})
      s.on('error', () => resolve(true))
      s.on('data', () => resolve(false))
      s.on('close', () => resolve(true))
      s.on('secureConnect', () => s.write(Buffer.alloc(23)))
    })
    assert.ok(refused)
  } finally {
    await server?.stop()
    await store?.close()
    h.cleanup()
  }
})
