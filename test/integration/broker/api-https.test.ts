import assert from 'node:assert/strict'
import {request} from 'node:https'
import {after, before, describe, it} from 'node:test'
import tls from 'node:tls'

import {ApiServer} from '../../../src/lib/broker/api.js'
import {Engine} from '../../../src/lib/broker/engine.js'
import {resolvePermissions} from '../../../src/lib/broker/permissions.js'
import {configSchema} from '../../../src/lib/config/schema.js'
import {silentLogger} from '../../../src/lib/log.js'
import {clientTlsOptions, serverTlsOptions} from '../../../src/lib/pki/index.js'
import {tempHome} from '../../helpers/home.js'
import {testPki} from '../../helpers/pki.js'

// The API's fastify app on our own HTTPS server (serverFactory): identity from the real client
// certificate, the keep-alive connection reused, and what is not HTTP answered in our error shape.
describe('broker HTTPS API over real mutual TLS', () => {
  const h = tempHome()
  const engine = new Engine()
  let api: ApiServer
  let port: number
  let home: Awaited<ReturnType<typeof testPki>>['home']
  before(async () => {
    ;({home} = await testPki(h.dir, {clients: ['admin'], servers: ['broker']}))
    const config = configSchema.parse({})
    engine.start()
    api = new ApiServer({
      connections: () => 0,
      engine,
      handshakes: {deadlineMs: 2000, maxPending: 8, maxPendingPerSource: 4},
      logger: silentLogger,
      maxBody: 1024,
      permissionsFor: (id) => resolvePermissions(config.broker.permissions, id),
      plugins: [],
      tls: serverTlsOptions(home, 'broker'),
    })
    port = await api.listen(0, '127.0.0.1')
  })
  after(async () => {
    await api.close()
    engine.stop()
    h.cleanup()
  })

  const get = (path: string, opts: tls.ConnectionOptions & {agent?: unknown}) =>
    new Promise<{status: number; body: string; socket: unknown}>((resolve, reject) => {
      const req = request({...opts, checkServerIdentity: () => undefined, host: '127.0.0.1', path, port} as never, (res) => {
        let b = ''
        res.on('data', (d) => (b += d))
        res.on('end', () => resolve({body: b, socket: res.socket, status: res.statusCode ?? 0}))
      })
      req.on('error', reject)
      req.end()
    })

  it('the client certificate is the identity; without one only /health answers', async () => {
    const ca = clientTlsOptions(home, 'admin').ca
    const anon = await get('/health', {ca})
    assert.equal(anon.status, 200)
    assert.deepEqual(Object.keys(JSON.parse(anon.body).components.engine), ['status'])
    const q = await get('/api/queues', {ca})
    assert.deepEqual([q.status, JSON.parse(q.body).error.code], [401, 'E_TLS_CLIENT_CERT'])
    const admin = await get('/api/queues', clientTlsOptions(home, 'admin'))
    assert.equal(admin.status, 200)
    assert.ok(JSON.parse(admin.body).some((x: {name: string}) => x.name === 'default_queue'))
  })

  it('what is not HTTP gets a 400 in our error shape and a closed connection', async () => {
    const sock = tls.connect({...clientTlsOptions(home, 'admin'), checkServerIdentity: () => undefined, host: '127.0.0.1', port})
    await new Promise((r) => sock.once('secureConnect', r))
    let text = ''
    sock.on('data', (d) => (text += d))
    sock.write('NOT HTTP AT ALL\r\n\r\n')
    await new Promise((r) => sock.once('close', r))
    assert.match(text, /^HTTP\/1\.1 400 Bad Request\r\n/)
    assert.deepEqual(JSON.parse(text.split('\r\n\r\n')[1]), {error: {code: 'E_BAD_REQUEST', message: 'the request is not valid HTTP'}})
  })

  it('a TLS handshake that never completes is closed at the hard deadline', async () => {
    const {connect} = await import('node:net')
    const raw = connect({host: '127.0.0.1', port})
    await new Promise((r) => raw.once('connect', r))
    const t = Date.now()
    // a handshake record of 16 KiB announced, then a slow drip of it: each byte would reset an idle timer
    raw.write(Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00]))
    const drip = setInterval(() => raw.write(Buffer.from([0x01])), 300)
    await new Promise((r) => raw.once('close', r))
    clearInterval(drip)
    const took = Date.now() - t
    assert.ok(took >= 1900 && took < 4000, `closed after ${took} ms`)
  })
})
