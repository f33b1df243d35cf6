import assert from 'node:assert/strict'
import type {IncomingMessage} from 'node:http'
import {after, before, describe, it} from 'node:test'

import {ApiServer} from '../../../src/lib/broker/api.js'
import {Engine} from '../../../src/lib/broker/engine.js'
import type {ResolvedPermissions} from '../../../src/lib/broker/permissions.js'
import {silentLogger} from '../../../src/lib/log.js'

// The broker's HTTPS API routes through fastify's inject(): the identity a verified client
// certificate would carry comes from a test header (ApiServer's peer option, tests only).
const ROLES: Record<string, string[]> = {admin: ['admin', 'monitor'], mon: ['monitor'], plain: []}
const REVOKED = 'dead'

describe('broker HTTPS API routes (inject)', () => {
  const engine = new Engine()
  let api: ApiServer
  before(() => {
    api = new ApiServer(
      {
        connections: () => 3,
        engine,
        isRevoked: (serial) => serial === REVOKED,
        logger: silentLogger,
        maxBody: 64,
        permissionsFor: (cn) => ({roles: ROLES[cn] ?? []}) as ResolvedPermissions,
        plugins: [
          {
            health: async () => ({ok: true, rows: 7}),
            name: 'extra',
            async routes(app) {
              app.get('/internal/boom', {config: {roles: ['admin']}}, async () => {
                throw new Error('secret /etc/mq/internal detail')
              })
            },
          },
        ],
        tls: {},
      },
      (req: IncomingMessage) => {
        const id = req.headers['x-test-identity']
        return id ? {cn: String(id), serial: id === 'revoked' ? REVOKED : '0a'} : null
      },
    )
    engine.start()
  })
  after(async () => {
    await api.app.close()
    engine.stop()
  })

  const call = async (method: string, url: string, identity?: string, payload?: string) => {
    const r = await api.app.inject({headers: identity ? {'x-test-identity': identity} : {}, method: method as 'GET', payload, url})
    return {body: r.body && r.headers['content-type']?.toString().includes('json') ? r.json() : r.body, headers: r.headers, status: r.statusCode}
  }

  it('GET /health: anyone gets the verdicts, monitors the details', async () => {
    const anon = await call('GET', '/health')
    assert.equal(anon.status, 200)
    assert.deepEqual(anon.body.components, {engine: {status: 'ok'}, extra: {status: 'ok'}})
    const mon = await call('GET', '/health', 'mon')
    assert.equal(mon.body.components.extra.rows, 7)
    assert.equal(typeof mon.body.components.engine.memory.rss, 'number')
    assert.equal(mon.body.connections, 3)
    // a revoked certificate is refused even where no certificate is needed
    const revoked = await call('GET', '/health', 'revoked')
    assert.equal(revoked.status, 401)
    assert.equal(revoked.body.error.code, 'E_CERT_REVOKED')
  })

  it('monitor routes: 401 without a certificate, 403 without the monitor right, the data with it', async () => {
    const none = await call('GET', '/api/queues')
    assert.equal(none.status, 401)
    assert.equal(none.body.error.code, 'E_TLS_CLIENT_CERT')
    assert.match(none.body.error.hint, /^Try this: curl --cert/)
    const plain = await call('GET', '/api/stats', 'plain')
    assert.equal(plain.status, 403)
    assert.equal(plain.body.error.code, 'E_FORBIDDEN')
    assert.equal(plain.body.error.message, 'plain may not GET /api/stats: it needs the monitor right')
    const queues = await call('GET', '/api/queues', 'mon')
    assert.equal(queues.status, 200)
    assert.ok(queues.body.some((q: {name: string}) => q.name === 'default_queue'))
    assert.equal((await call('GET', '/api/queues/', 'mon')).status, 200, 'a trailing slash is the same route')
    const ex = await call('GET', '/api/exchanges', 'mon')
    assert.deepEqual(Object.keys(ex.body).sort(), ['bindings', 'exchanges'])
    const st = await call('GET', '/api/stats', 'mon')
    assert.equal(st.status, 200)
    assert.ok(Array.isArray(st.body.queues))
    const missing = await call('GET', '/api/messages/no-such-id', 'mon')
    assert.deepEqual([missing.status, missing.body], [404, {error: {code: 'E_NOT_FOUND', message: 'no status for message no-such-id'}}])
  })

  it('admin routes: 403 for monitors, engine errors keep their codes and statuses', async () => {
    engine.declareQueue('q-purge')
    const forbidden = await call('POST', '/api/queues/q-purge/purge', 'mon')
    assert.equal(forbidden.status, 403)
    assert.deepEqual(forbidden.body.error, {code: 'E_FORBIDDEN', hint: 'Try this: grant the role in broker.permissions', message: 'mon lacks a role among admin'})
    assert.deepEqual((await call('POST', '/api/queues/q-purge/purge', 'admin')).body, {messages: 0})
    const gone = await call('DELETE', '/api/queues/nope', 'admin')
    assert.equal(gone.status, 404)
    assert.equal(gone.body.error.code, 'E_NOT_FOUND')
    assert.match(gone.body.error.hint, /mq queue declare nope/)
    const reserved = await call('DELETE', '/api/queues/default_queue', 'admin')
    assert.deepEqual([reserved.status, reserved.body.error.code], [400, 'E_RESERVED'])
    assert.deepEqual((await call('DELETE', '/api/queues/q-purge', 'admin')).body, {messages: 0})
  })

  it('unknown paths 404, other methods 405, before any identity check', async () => {
    const nf = await call('GET', '/nope')
    assert.deepEqual(nf.body, {error: {code: 'E_NOT_FOUND', hint: 'Try this: GET /health, /metrics, /api/stats, /api/queues', message: 'no route GET /nope'}})
    const m = await call('GET', '/api/queues/x/purge')
    assert.deepEqual([m.status, m.body], [405, {error: {code: 'E_METHOD', message: 'GET is not allowed on /api/queues/x/purge'}}])
    assert.equal((await call('HEAD', '/health')).status, 405)
    assert.equal((await call('PATCH', '/internal/boom', 'admin')).status, 405)
  })

  it('bodies over broker.max_payload: 413, but only for callers with the right', async () => {
    const big = 'x'.repeat(65)
    const tooLarge = await call('POST', '/api/queues/x/purge', 'admin', big)
    assert.deepEqual([tooLarge.status, tooLarge.body], [413, {error: {code: 'E_TOO_LARGE', message: 'request body over 64 bytes'}}])
    assert.equal((await call('POST', '/api/queues/x/purge', undefined, big)).status, 401)
    assert.equal((await call('POST', '/api/queues/x/purge', 'mon', big)).status, 403)
  })

  it('an internal error answers 500 E_INTERNAL without its text', async () => {
    const r = await call('GET', '/internal/boom', 'admin')
    assert.deepEqual([r.status, r.body], [500, {error: {code: 'E_INTERNAL', message: 'internal error'}}])
  })

  it('/metrics: the Prometheus text, requests counted by route pattern ("other" for no route)', async () => {
    assert.equal((await call('GET', '/metrics', 'plain')).status, 403)
    const m = await call('GET', '/metrics', 'mon')
    assert.equal(m.status, 200)
    assert.match(String(m.headers['content-type']), /^text\/plain/)
    assert.match(m.body, /mq_api_requests_total\{method="DELETE",route="\/api\/queues\/:name",status="404"\} 1/)
    assert.match(m.body, /mq_api_requests_total\{method="GET",route="other",status="404"\} 1/)
    assert.match(m.body, /mq_api_requests_total\{method="GET",route="other",status="405"\} 1/)
    assert.match(m.body, /mq_queue_messages\{queue="default_queue"\} 0/)
    assert.match(m.body, /mq_connections 3/)
  })
})
