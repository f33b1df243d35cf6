import assert from 'node:assert/strict'
import {after, before, describe, test} from 'node:test'
import tls from 'node:tls'

import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {CertificateAuthority, clientTlsOptions, serverTlsOptions} from '../../../src/lib/pki/index.js'
import {tempHome} from '../../helpers/home.js'

/** Connects like our clients do (no host-name check, our CA only); resolves with what the client got. */
function connect(serverOpts: tls.TlsOptions, clientOpts: tls.ConnectionOptions): Promise<{ok: boolean; error?: string}> {
  return new Promise((resolve) => {
    const srv = tls.createServer(serverOpts, (sock) => sock.end('hi'))
    srv.on('tlsClientError', () => {})
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as {port: number}).port
      const c = tls.connect({...clientOpts, checkServerIdentity: () => undefined, host: '127.0.0.1', port})
      let got = ''
      c.on('data', (d) => (got += d))
      c.on('end', () => {
        srv.close()
        resolve({ok: got === 'hi'})
      })
      c.on('error', (err) => {
        c.destroy()
        srv.close()
        resolve({error: (err as NodeJS.ErrnoException).code ?? err.message, ok: false})
      })
    })
  })
}

describe('clients check the server certificate against the CRL', () => {
  const h = tempHome()
  const home = new MqHome(h.dir)
  const ca = CertificateAuthority.open(home, defaultConfig().pki)

  before(async () => {
    await ca.init()
    await ca.issue('good-server', {type: 'server'})
    await ca.issue('stolen-server', {type: 'server'})
    await ca.issue('alice', {type: 'client'})
  })
  after(() => h.cleanup())

  test('a server with a valid certificate is accepted', async () => {
    const r = await connect(serverTlsOptions(home, 'good-server'), clientTlsOptions(home, 'alice'))
    assert.deepEqual(r, {ok: true})
  })

  test('a server whose certificate was revoked (e.g. a stolen broker key) is refused', async () => {
    // the thief keeps the TLS material it copied before the revocation
    const stolen = serverTlsOptions(home, 'stolen-server')
    delete stolen.crl
    await ca.revoke('stolen-server', 'key-compromise')
    const r = await connect(stolen, clientTlsOptions(home, 'alice'))
    assert.equal(r.ok, false)
    assert.equal(r.error, 'CERT_REVOKED')
  })
})
