import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'

import type {FastifyInstance} from 'fastify'

import type {ApiContext, BrokerPublisher} from '../../../src/lib/broker/api-types.js'
import {buildApiApp} from '../../../src/lib/broker/api/app.js'
import type {ResolvedPermissions} from '../../../src/lib/broker/permissions.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {configSchema} from '../../../src/lib/config/schema.js'
import {MqError} from '../../../src/lib/errors.js'
import {silentLogger} from '../../../src/lib/log.js'
import {type CaLike, createRecordsPlugin} from '../../../src/lib/records/plugin.js'
import {tempHome} from '../../helpers/home.js'

interface Answer {
  status: number
  body: unknown
}

/**
 * The broker's API app with the records routes, called with inject(): the identity a client
 * certificate would carry comes from a test header (the app's peer option), its roles from ctx.
 */
let app: FastifyInstance
const ROLES: Record<string, string[]> = {admin: ['admin'], alice: [], proxy: ['proxy'], worker: ['worker']}
function apiApp(routes: Parameters<typeof buildApiApp>[0]['routes'], maxBody = 1024 * 1024): FastifyInstance {
  return buildApiApp({
    logger: silentLogger,
    maxBody,
    peer: (req) => (req.headers['x-test-identity'] ? {cn: String(req.headers['x-test-identity']), serial: '0a'} : null),
    permissionsFor: (cn) => ({roles: ROLES[cn] ?? []}) as ResolvedPermissions,
    routes,
  })
}

async function call(method: string, url: string, body: unknown, ctx: ApiContext, headers: Record<string, string> = {'content-type': 'application/json'}): Promise<Answer> {
  const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : JSON.stringify(body)
  const r = await app.inject({headers: {...headers, ...(ctx.identity ? {'x-test-identity': ctx.identity} : {})}, method: method as 'GET', payload, url})
  return {body: r.json(), status: r.statusCode}
}

const proxy: ApiContext = {identity: 'proxy', remote: '127.0.0.1', roles: ['proxy']}
const worker: ApiContext = {identity: 'worker', remote: '127.0.0.1', roles: ['worker']}
const admin: ApiContext = {identity: 'admin', remote: '127.0.0.1', roles: ['admin']}
const alice: ApiContext = {identity: 'alice', remote: '127.0.0.1', roles: []}

describe('records API plugin', () => {
  const h = tempHome()
  const home = new MqHome(h.dir)
  const published: {exchange: string; key: string; body: Buffer; id?: string}[] = []
  let failPublish = false
  const publisher: BrokerPublisher = {
    async publish(exchange, routingKey, body, o) {
      if (failPublish) throw new MqError('E_UNROUTABLE', 'no queue bound')
      published.push({body, exchange, id: o?.messageId, key: routingKey})
      return {messageId: o?.messageId ?? 'x', queues: ['q1']}
    },
  }
  const certs = [
    {fingerprint: 'aa'.repeat(32), name: 'alice', notAfter: '2099-01-01T00:00:00.000Z', notBefore: '2026-01-01T00:00:00.000Z', serial: '0a', status: 'active', type: 'client'} as ReturnType<CaLike['list']>[number],
    {fingerprint: 'bb'.repeat(32), name: 'broker', notAfter: '2099-01-01T00:00:00.000Z', notBefore: '2026-01-01T00:00:00.000Z', serial: '0b', status: 'active', type: 'server'},
  ]
  const ca: CaLike = {
    list: () => certs,
    async revoke(name, reason) {
      const c = certs.find((x) => x.name === name)
      if (!c) throw new MqError('E_CERT_NOT_FOUND', `no cert ${name}`)
      Object.assign(c, {reason, revokedAt: new Date().toISOString(), status: 'revoked'})
      return [{name: c.name, serial: c.serial}]
    },
  }
  let plugin: Awaited<ReturnType<typeof createRecordsPlugin>>
  before(async () => {
    plugin = await createRecordsPlugin({ca, config: configSchema.parse({}), home, publisher})
    app = apiApp([plugin.routes])
  })
  after(async () => {
    await app.close()
    await plugin.close!()
    h.cleanup()
  })

  const msg = {client_id: 'alice', client_serial: '0a', message_body: 'hello there', message_id: 'm-1', metadata: {k: 'v'}, sender_number: '+4915200000000'}

  it('register: 201 then 200 for the same id; only the proxy role may register', async () => {
    const r = await call('POST', '/internal/messages/register', msg, proxy)
    assert.equal(r.status, 201, JSON.stringify(r.body))
    assert.deepEqual({...(r.body as object), queued_at: 'T'}, {client_id: 'alice', created: true, message_id: 'm-1', queued_at: 'T', status: 'queued'})
    assert.equal((await call('POST', '/internal/messages/register', msg, proxy)).status, 200)
    for (const ctx of [worker, alice, admin]) {
      const f = await call('POST', '/internal/messages/register', msg, ctx)
      assert.equal(f.status, 403)
      assert.equal((f.body as {error: {code: string}}).error.code, 'E_FORBIDDEN')
    }
  })

  it('register rejects bad input with 4xx and the JSON error shape', async () => {
    const cases: [unknown, number, string][] = [
      [{...msg, message_id: 'bad id!'}, 422, 'E_MESSAGE_ID'],
      [{...msg, sender_number: '0151'}, 422, 'E_SENDER_NUMBER'],
      [{...msg, message_body: '   '}, 422, 'E_BODY_BLANK'],
      [{...msg, message_body: 'x'.repeat(1001)}, 422, 'E_BODY_TOO_LONG'],
      [{...msg, metadata: [1]}, 422, 'E_FIELD_TYPE'],
      [Buffer.from('{nope'), 400, 'E_BAD_JSON'],
      [{...msg, client_id: 'mallory'}, 409, 'E_MESSAGE_ID_TAKEN'],
    ]
    for (const [body, status, code] of cases) {
      const r = await call('POST', '/internal/messages/register', body, proxy)
      assert.equal(r.status, status, JSON.stringify(r.body))
      assert.equal((r.body as {error: {code: string}}).error.code, code)
    }
  })

  it('register in batches: one outcome per item, a bad item fails no other', async () => {
    const r = await call('POST', '/internal/messages/register', {messages: [
      {...msg, message_id: 'b-1'},
      {...msg, message_id: 'b-2', sender_number: 'nope'},
      {...msg, message_id: 'm-1'},
      {...msg, client_id: 'mallory', message_id: 'b-1'},
      'not an object',
    ]}, proxy)
    assert.equal(r.status, 200, JSON.stringify(r.body))
    const res = (r.body as {results: Record<string, any>[]}).results
    assert.equal(res.length, 5)
    assert.deepEqual([res[0].created, res[0].status], [true, 'queued'])
    assert.deepEqual([res[1].status, res[1].error.code], [422, 'E_SENDER_NUMBER'])
    assert.equal(res[2].created, false)
    assert.deepEqual([res[3].status, res[3].error.code], [409, 'E_MESSAGE_ID_TAKEN'])
    assert.equal(res[4].status, 422)
    assert.equal((await plugin.store.get('b-1'))!.status, 'queued')
    assert.equal(await plugin.store.get('b-2'), undefined)
  })

  it('deliver: publishes the decrypted message once, repeat is a no-op', async () => {
    failPublish = true
    const f = await call('POST', '/internal/messages/deliver', {message_id: 'm-1'}, worker)
    assert.equal(f.status, 400)
    assert.equal((await plugin.store.get('m-1'))!.status, 'queued')
    failPublish = false
    const r = await call('POST', '/internal/messages/deliver', {attempts: 2, exchange: 'ex', message_id: 'm-1', routing_key: 'rk'}, worker)
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.equal((r.body as {duplicate: boolean}).duplicate, false)
    assert.equal(published.length, 1)
    const got = JSON.parse(published[0].body.toString())
    assert.deepEqual({...got, queued_at: 'T'}, {client_id: 'alice', message_body: 'hello there', message_id: 'm-1', metadata: {k: 'v'}, queued_at: 'T', sender_number: '+4915200000000'})
    assert.equal(published[0].exchange, 'ex')
    assert.equal(published[0].id, 'm-1')
    const again = await call('POST', '/internal/messages/deliver', {message_id: 'm-1'}, worker)
    assert.equal((again.body as {duplicate: boolean}).duplicate, true)
    assert.equal(published.length, 1)
    const row = (await plugin.store.get('m-1'))!
    assert.equal(row.status, 'delivered')
    assert.equal(row.attempts, 2)
    assert.equal((await call('POST', '/internal/messages/deliver', {message_id: 'nope'}, worker)).status, 404)
    assert.equal((await call('POST', '/internal/messages/deliver', {message_id: 'm-1'}, proxy)).status, 403)
  })

  it('deliver in batches: one outcome per item', async () => {
    const before = published.length
    const r = await call('POST', '/internal/messages/deliver', {exchange: 'ex', messages: [{attempts: 1, message_id: 'b-1'}, {message_id: 'm-1'}, {message_id: 'ghost'}, {message_id: 'bad id'}], routing_key: 'rk'}, worker)
    assert.equal(r.status, 200, JSON.stringify(r.body))
    const res = (r.body as {results: Record<string, any>[]}).results
    assert.deepEqual(res.map((x) => [x.status, x.duplicate ?? x.error?.code]), [['delivered', false], ['delivered', true], [404, 'E_NOT_FOUND'], [422, 'E_MESSAGE_ID']])
    assert.equal(published.length, before + 1)
    assert.equal((await plugin.store.get('b-1'))!.status, 'delivered')
  })

  it('status: workers record retries and failure; failed messages are not delivered', async () => {
    await call('POST', '/internal/messages/register', {...msg, message_id: 'm-2'}, proxy)
    const p = await call('PUT', '/internal/messages/m-2/status', {attempts: 1, error: 'E_API_UNAVAILABLE', status: 'processing'}, worker)
    assert.equal(p.status, 200)
    assert.deepEqual({...(p.body as object), last_attempt_at: 'T'}, {attempts: 1, changed: true, last_attempt_at: 'T', message_id: 'm-2', status: 'processing'})
    assert.equal((await call('PUT', '/internal/messages/m-2/status', {status: 'delivered'}, worker)).status, 422)
    assert.equal((await call('PUT', '/internal/messages/m-2/status', {attempts: 3, error: 'gave up', status: 'failed'}, worker)).status, 200)
    const d = await call('POST', '/internal/messages/deliver', {message_id: 'm-2'}, worker)
    assert.equal(d.status, 409)
    assert.equal(published.length, 2)
  })

  it('admin: list, view without plaintext, audited decrypt, stats, clients and revoke', async () => {
    const l = await call('GET', '/admin/messages?client=alice&status=delivered', undefined, admin)
    const rows = (l.body as {messages: Record<string, unknown>[]}).messages
    assert.deepEqual(rows.map((r) => r.message_id).sort(), ['b-1', 'm-1'])
    assert.ok(rows.every((r) => r.sender === '+4915****0000'))
    assert.equal(JSON.stringify(l.body).includes('hello there'), false)
    assert.equal((await call('GET', '/admin/messages', undefined, worker)).status, 403)
    const v = await call('GET', '/admin/messages/m-1', undefined, admin)
    assert.equal((v.body as {message_body?: string}).message_body, undefined)
    assert.equal((await plugin.store.auditLog()).filter((e) => e.event_type === 'message.decrypt').length, 0)
    const dv = await call('GET', '/admin/messages/m-1?decrypt=1', undefined, admin)
    assert.equal((dv.body as {message_body: string}).message_body, 'hello there')
    assert.equal((dv.body as {sender_number: string}).sender_number, '+4915200000000')
    const audit = (await plugin.store.auditLog()).filter((e) => e.event_type === 'message.decrypt')
    assert.equal(audit.length, 1)
    assert.equal(audit[0].actor, 'admin')
    const s = await call('GET', '/admin/records/stats', undefined, admin)
    const stats = s.body as {messages: Record<string, number>; clients: Record<string, number>}
    assert.equal(stats.messages.total, 3)
    assert.equal(stats.messages.delivered, 2)
    assert.equal(stats.messages.failed, 1)
    assert.equal(stats.clients.active, 1)
    const c = await call('GET', '/admin/clients', undefined, admin)
    assert.deepEqual((c.body as {clients: {identity: string}[]}).clients.map((x) => x.identity), ['alice'])
    const rv = await call('POST', '/admin/clients/alice/revoke', {reason: 'key-compromise'}, admin)
    assert.equal(rv.status, 200, JSON.stringify(rv.body))
    const c2 = await call('GET', '/admin/clients?status=revoked', undefined, admin)
    assert.equal((c2.body as {clients: {reason: string}[]}).clients[0].reason, 'key-compromise')
    assert.equal((await call('POST', '/admin/clients/nobody/revoke', {reason: 'x'}, admin)).status, 404)
    assert.ok((await plugin.store.auditLog()).some((e) => e.event_type === 'client.revoke'))
  })

  it('health and metrics', async () => {
    const c = await plugin.components!()
    assert.equal(c.store.status, 'ok')
    assert.equal(typeof c.store.latency_ms, 'number')
    // the proxy and worker routes above were used, so the broker also reports Redis (the shared test Redis)
    assert.equal(c.redis?.status, 'ok', JSON.stringify(c.redis))
    const text = await plugin.metrics!()
    assert.match(text, /mq_records_messages_registered_total\{client_id="alice"\} 3/)
    assert.match(text, /mq_records_messages_delivered_total\{client_id="alice"\} 2/)
    assert.match(text, /mq_records_store_seconds_count\{op="ping"\} 1/)
  })

  it('schemas answer our codes: ids, required and typed fields, enums, limits, bodies', async () => {
    const code = async (method: string, url: string, body: unknown, ctx: ApiContext, headers?: Record<string, string>) => {
      const r = await call(method, url, body, ctx, headers)
      const e = (r.body as {error: {code: string; message: string}}).error
      return [r.status, e?.code, e?.message]
    }
    assert.deepEqual(await code('PUT', '/internal/messages/bad%20id!/status', {status: 'queued'}, worker), [422, 'E_MESSAGE_ID', 'message_id must be 1-64 characters of [A-Za-z0-9._:-].'])
    assert.deepEqual(await code('PUT', '/internal/messages/m-2/status', {}, worker), [422, 'E_FIELD_MISSING', 'Field status is required.'])
    assert.deepEqual(await code('PUT', '/internal/messages/m-2/status', {status: null}, worker), [422, 'E_FIELD_MISSING', 'Field status is required.'])
    assert.deepEqual(await code('PUT', '/internal/messages/m-2/status', {status: 7}, worker), [422, 'E_FIELD_TYPE', 'Field status must be a string.'])
    for (const attempts of [-1, '3', 1.5]) assert.deepEqual(await code('PUT', '/internal/messages/m-2/status', {attempts, status: 'queued'}, worker), [422, 'E_FIELD_TYPE', 'Field attempts must be a non-negative integer.'])
    assert.deepEqual(await code('PUT', '/internal/messages/m-2/status', {error: 'e'.repeat(10_001), status: 'queued'}, worker), [422, 'E_FIELD_TOO_LONG', 'Field error is longer than 10000 characters.'])
    assert.deepEqual(await code('POST', '/internal/messages/deliver', {exchange: 5, message_id: 'm-1'}, worker), [422, 'E_FIELD_TYPE', 'Field exchange must be a string.'])
    assert.deepEqual(await code('POST', '/internal/messages/register', Buffer.alloc(0), proxy), [400, 'E_BAD_JSON', 'The request body is not valid JSON.'])
    assert.deepEqual(await code('POST', '/internal/messages/register', [1], proxy), [400, 'E_BAD_JSON', 'The request body must be a JSON object.'])
    // proxies need not say application/json: the body is JSON whatever the header
    assert.equal((await call('POST', '/internal/messages/register', {...msg, message_id: 'no-ct'}, proxy, {})).status, 201)
    for (const limit of ['0', 'abc', '10001']) assert.deepEqual(await code('GET', `/admin/messages?limit=${limit}`, undefined, admin), [422, 'E_LIMIT', 'limit must be an integer 1..10000.'])
    assert.equal((await code('GET', '/admin/messages?status=bogus', undefined, admin))[1], 'E_STATUS')
    assert.equal((await code('GET', '/admin/clients?status=bogus', undefined, admin))[1], 'E_STATUS')
    assert.equal((await code('GET', '/admin/messages/bad%20id', undefined, admin))[1], 'E_MESSAGE_ID')
    assert.deepEqual(await code('POST', '/admin/users', {email: 'x@example.org', password: 'long enough', role: 'root'}, admin), [422, 'E_ROLE', 'role must be one of admin, user.'])
    assert.deepEqual(await code('POST', '/admin/users', {password: 'long enough'}, admin), [422, 'E_FIELD_MISSING', 'Field email is required.'])
    assert.deepEqual(await code('POST', '/admin/users', {email: 12, password: 'long enough'}, admin), [422, 'E_FIELD_TYPE', 'Field email must be a string.'])
    // revoke takes no body at all (reason "unspecified"): the CA answers, not the body check
    assert.deepEqual((await code('POST', '/admin/clients/nobody/revoke', undefined, admin, {})).slice(0, 2), [404, 'E_CERT_NOT_FOUND'])
    assert.deepEqual(await code('GET', '/internal/messages/register', undefined, proxy), [405, 'E_METHOD', 'GET is not allowed on /internal/messages/register'])
    // the broker's limit on bodies applies to plugin routes, before they parse anything
    const small = apiApp([plugin.routes], 64)
    try {
      const r = await small.inject({headers: {'content-type': 'application/json', 'x-test-identity': 'proxy'}, method: 'POST', payload: JSON.stringify(msg), url: '/internal/messages/register'})
      assert.deepEqual([r.statusCode, r.json()], [413, {error: {code: 'E_TOO_LARGE', message: 'request body over 64 bytes'}}])
    } finally {
      await small.close()
    }
  })
})
