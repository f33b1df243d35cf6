import assert from 'node:assert/strict'
import {createServer} from 'node:https'
import type {AddressInfo} from 'node:net'
import {test} from 'node:test'

import {clientTlsOptions, serverTlsOptions} from '../../../src/lib/pki/index.js'
import {ResponseFramer, loadTest} from '../../../src/lib/proxy/load.js'
import {tempHome} from '../../helpers/home.js'
import {testPki} from '../../helpers/pki.js'

const b = (s: string): Buffer => Buffer.from(s, 'latin1')

test('ResponseFramer: content-length, chunked with extensions and trailers, bodiless statuses, interim 100, pipelined', () => {
  const f = new ResponseFramer()
  const stream =
    'HTTP/1.1 100 Continue\r\n\r\n' +
    'HTTP/1.1 202 Accepted\r\ncontent-length: 5\r\n\r\nhello' +
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nx-trailer: 1\r\n\r\n' +
    'HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n' +
    'HTTP/1.1 429 Too Many\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n0\r\n\r\n'
  assert.deepEqual(f.push(b(stream)), [202, 200, 204, 429])
  // byte by byte gives the same answers
  const g = new ResponseFramer()
  const got: number[] = []
  for (const ch of stream) got.push(...g.push(b(ch)))
  assert.deepEqual(got, [202, 200, 204, 429])
})

test('ResponseFramer: a body read to the end of the connection, and a stream that is not HTTP', () => {
  const f = new ResponseFramer()
  assert.deepEqual(f.push(b('HTTP/1.0 200 OK\r\nconnection: close\r\n\r\npartial')), [])
  assert.deepEqual(f.push(b('more body')), [])
  assert.equal(f.end(), 200)
  assert.deepEqual(new ResponseFramer().push(b('SSH-2.0-OpenSSH\r\n\r\n')), [-1])
  assert.deepEqual(new ResponseFramer().push(b('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n')), [-1])
})

test('the load generator measures a chunked server with 0 errors (node answers chunked when writeHead has no content-length)', async () => {
  const t = tempHome()
  const {home} = await testPki(t.dir, {clients: ['bench'], servers: ['srv']})
  const srv = createServer({...serverTlsOptions(home, 'srv'), requestCert: true, rejectUnauthorized: true}, (req, res) => {
    req.resume()
    req.on('end', () => {
      res.writeHead(202, {'content-type': 'application/json'})
      res.end('{"status":"queued"}')
    })
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  try {
    const port = (srv.address() as AddressInfo).port
    const r = await loadTest(`https://127.0.0.1:${port}/`, clientTlsOptions(home, 'bench'), {body: () => Buffer.from('{}'), connections: 2, expect: 202, seconds: 0.5})
    assert.ok(r.requests > 10, `only ${r.requests} requests`)
    assert.equal(r.errors, 0, `${r.errors} errors of ${r.requests}`)
    assert.equal(r.accepted, r.requests)
  } finally {
    srv.closeAllConnections()
    srv.close()
    t.cleanup()
  }
})
