import assert from 'node:assert/strict'
import {createServer} from 'node:https'
import type {AddressInfo} from 'node:net'
import {test} from 'node:test'

import {clientTlsOptions, serverTlsOptions} from '../../../src/lib/pki/index.js'
import {loadTest} from '../../../src/lib/proxy/load.js'
import {tempHome} from '../../helpers/home.js'
import {testPki} from '../../helpers/pki.js'

test('the load generator counts each status it gets, sends every body whole, and reads responses split across packets', async () => {
  const t = tempHome()
  const {home} = await testPki(t.dir, {clients: ['bench'], servers: ['srv']})
  const seen: string[] = []
  const srv = createServer({...serverTlsOptions(home, 'srv'), requestCert: true, rejectUnauthorized: true}, (req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (d: string) => (body += d))
    req.on('end', () => {
      seen.push(body)
      const n = Number(JSON.parse(body).n)
      // every third answer trickles out in two writes: the parser must wait for the whole body
      const reply = JSON.stringify({n, pad: 'x'.repeat(n % 50)})
      res.writeHead(n % 2 === 0 ? 202 : 429, {'content-length': Buffer.byteLength(reply), 'content-type': 'application/json'})
      if (n % 3 === 0) {
        res.write(reply.slice(0, 5))
        setTimeout(() => res.end(reply.slice(5)), 2)
      } else res.end(reply)
    })
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  try {
    const port = (srv.address() as AddressInfo).port
    const r = await loadTest(`https://127.0.0.1:${port}/api/v1/messages`, clientTlsOptions(home, 'bench'), {body: (i) => Buffer.from(JSON.stringify({n: i})), connections: 4, expect: 202, seconds: 0.5})
    assert.ok(r.requests > 20, `only ${r.requests} requests`)
    assert.equal(r.accepted + r.errors, r.requests)
    // the 429s are errors; even and odd requests alternate, so the split is near half
    assert.ok(r.accepted > 0 && r.errors > 0)
    assert.ok(Math.abs(r.accepted - r.errors) <= 4 + r.requests / 5, `${r.accepted} accepted, ${r.errors} errors`)
    // every request the server saw was whole JSON, none twice
    const ns = seen.map((b) => JSON.parse(b).n as number)
    assert.equal(new Set(ns).size, ns.length)
  } finally {
    srv.closeAllConnections()
    srv.close()
    t.cleanup()
  }
})
