import assert from 'node:assert/strict'
import {createServer} from 'node:https'
import type {AddressInfo} from 'node:net'
import {test} from 'node:test'

import {guardHandshakes} from '../../../src/lib/net/pending.js'
import {clientTlsOptions, serverTlsOptions} from '../../../src/lib/pki/index.js'
import {loadTest} from '../../../src/lib/proxy/load.js'
import {tempHome} from '../../helpers/home.js'
import {testPki} from '../../helpers/pki.js'

// The proxy caps TLS handshakes in progress per source address (proxy.max_handshakes_per_source, 64), and every
// bench connection comes from 127.0.0.1: `mq proxy bench --connections 128` must still measure, not fail or hang.
test('the load generator opens more connections than the server lets handshake at once from one address', async () => {
  const t = tempHome()
  const {home} = await testPki(t.dir, {clients: ['bench'], servers: ['srv']})
  const srv = createServer({...serverTlsOptions(home, 'srv'), requestCert: true, rejectUnauthorized: true}, (req, res) => {
    req.resume()
    req.on('end', () => {
      res.writeHead(202, {'content-length': '2'})
      res.end('{}')
    })
  })
  guardHandshakes(srv, {deadlineMs: 10_000, maxPending: 256, maxPendingPerSource: 2}, undefined, 'test')
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  try {
    const port = (srv.address() as AddressInfo).port
    const run = loadTest(`https://127.0.0.1:${port}/`, clientTlsOptions(home, 'bench'), {body: () => Buffer.from('{}'), connections: 48, expect: 202, seconds: 0.5})
    const r = await Promise.race([run, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the load test did not finish within 20 s')), 20_000).unref())])
    assert.equal(r.errors, 0)
    assert.ok(r.requests >= 48, `${r.requests} requests`)
  } finally {
    srv.closeAllConnections()
    srv.close()
    t.cleanup()
  }
})
