import assert from 'node:assert/strict'
import {X509Certificate} from 'node:crypto'
import {existsSync} from 'node:fs'
import {after, before, describe, it} from 'node:test'

import {readCrlSync} from '../../../src/lib/pki/index.js'
import {messageView} from '../../../src/lib/portal/routes/messages.js'
import {STATS_MAX_AGE_MS} from '../../../src/lib/portal/routes/stats.js'
import {type PortalFixture, portalFixture, seedMessages} from '../../helpers/portal.js'
import {tempMysqlDatabase} from '../../helpers/services.js'

for (const backend of ['sqlite', 'mysql'] as const) {
  describe(`portal messages API (${backend})`, () => {
    let f: PortalFixture
    let db: Awaited<ReturnType<typeof tempMysqlDatabase>> | undefined
    let alice: string
    let admin: string
    before(async () => {
      db = backend === 'mysql' ? await tempMysqlDatabase() : undefined
      f = await portalFixture({url: db?.url})
      await seedMessages(f.store, 'acme', 25)
      await seedMessages(f.store, 'globex', 7)
      await f.store.setStatus('acme-0003', 'failed', {error: 'no route'})
      await f.store.markDelivered('acme-0004')
      alice = (await f.login('alice@acme.example')).access_token
      admin = (await f.login('admin@example.com')).access_token
    })
    after(async () => {
      await f.cleanup()
      await db?.drop()
    })

    it("a user pages through their own client's messages only, newest first, numbers masked", async () => {
      const seen: string[] = []
      let url = '/portal/messages?limit=10'
      for (let i = 0; i < 10; i++) {
        const r = await f.call('GET', url, alice)
        assert.equal(r.status, 200)
        for (const m of r.json.messages) {
          assert.equal(m.client_id, 'acme')
          assert.match(m.sender, /\*/)
          assert.equal(m.message_body, undefined)
          // exactly these fields, with null kept null (answers are serialised by their schema)
          assert.deepEqual(Object.keys(m).sort(), ['attempts', 'client_id', 'delivered_at', 'last_attempt_at', 'last_error', 'message_id', 'queued_at', 'sender', 'status', 'updated_at'])
          assert.deepEqual(m, JSON.parse(JSON.stringify(messageView((await f.store.get(m.message_id))!))))
        }
        assert.doesNotMatch(JSON.stringify(r.json), /\+4915200000\d{3}/)
        seen.push(...r.json.messages.map((m: {message_id: string}) => m.message_id))
        if (!r.json.next) break
        url = `/portal/messages?limit=10&cursor=${r.json.next}`
      }
      assert.equal(seen.length, 25)
      assert.equal(new Set(seen).size, 25)
      assert.deepEqual(seen.slice(0, 2), ['acme-0024', 'acme-0023'])
      // ?client= of another client changes nothing for a user
      const other = await f.call('GET', '/portal/messages?client=globex', alice)
      assert.ok(other.json.messages.every((m: {client_id: string}) => m.client_id === 'acme'))
      assert.equal((await f.call('GET', '/portal/messages/globex-0001', alice)).status, 404)
      assert.equal((await f.call('GET', '/portal/messages/acme-0001', alice)).json.client_id, 'acme')
    })

    it('filters by status and by date; admins see every client or one', async () => {
      const failed = await f.call('GET', '/portal/messages?status=failed', alice)
      assert.deepEqual(failed.json.messages.map((m: {message_id: string}) => m.message_id), ['acme-0003'])
      const range = await f.call('GET', '/portal/messages?from=2026-01-01T00:00:05Z&to=2026-01-01T00:00:08Z', alice)
      assert.deepEqual(range.json.messages.map((m: {message_id: string}) => m.message_id), ['acme-0007', 'acme-0006', 'acme-0005'])
      const all = await f.call('GET', '/portal/messages?limit=200', admin)
      assert.equal(all.json.messages.length, 32)
      const globex = await f.call('GET', '/portal/messages?client=globex', admin)
      assert.equal(globex.json.messages.length, 7)
      assert.equal((await f.call('GET', '/portal/messages?status=lost', alice)).status, 422)
      assert.equal((await f.call('GET', '/portal/messages?cursor=bm9wZQ', alice)).status, 400)
      assert.equal((await f.call('GET', '/portal/messages?from=yesterday-ish', alice)).status, 422)
    })

    it('decrypts for admins only, and audits it before answering', async () => {
      assert.equal((await f.call('GET', '/admin/messages/acme-0002?decrypt=1', alice)).status, 403)
      const r = await f.call('GET', '/admin/messages/acme-0002?decrypt=1', admin)
      assert.equal(r.status, 200)
      assert.equal(r.json.message_body, 'hello 2 from acme')
      assert.equal(r.json.sender_number, '+4915200000002')
      const [e] = await f.store.auditLog({type: 'message.decrypt'})
      assert.equal(e.actor, 'admin@example.com')
      assert.equal(e.identity, 'acme')
      assert.equal(JSON.parse(e.event_data!).message_id, 'acme-0002')
      assert.equal((await f.call('GET', '/admin/messages/nope?decrypt=1', admin)).status, 404)
    })
  })
}

describe('portal admin API', () => {
  let f: PortalFixture
  let admin: string
  let user: string
  before(async () => {
    f = await portalFixture()
    admin = (await f.login('admin@example.com')).access_token
    user = (await f.login('alice@acme.example')).access_token
  })
  after(() => f.cleanup())

  it('refuses every admin route to a user (403) and to nobody (401)', async () => {
    for (const [m, url] of [['GET', '/admin/users'], ['GET', '/admin/certificates'], ['GET', '/admin/stats'], ['GET', '/admin/audit'], ['POST', '/admin/certificates/generate'], ['DELETE', '/admin/users/1']] as const) {
      assert.equal((await f.call(m, url, user, m === 'POST' ? {name: 'x'} : undefined)).status, 403, url)
      assert.equal((await f.call(m, url, undefined, m === 'POST' ? {name: 'x'} : undefined)).status, 401, url)
    }
  })

  it('issues a client certificate bundle whose key is shown once, lists it, revokes it into the CRL', async () => {
    const r = await f.call('POST', '/admin/certificates/generate', admin, {name: 'carol', type: 'client', days: 30})
    assert.equal(r.status, 201)
    const cert = new X509Certificate(r.json.cert_pem)
    const ca = new X509Certificate(r.json.ca_pem)
    assert.ok(cert.verify(ca.publicKey))
    assert.match(cert.subject, /CN=carol/)
    assert.match(r.json.key_pem, /BEGIN PRIVATE KEY/)
    assert.ok(cert.checkPrivateKey((await import('node:crypto')).createPrivateKey(r.json.key_pem)))
    assert.equal(existsSync(f.home.issuedKey('carol')), false, 'the key is not kept on the server')
    assert.equal(r.json.certificate.days_left, 29)
    assert.equal((await f.call('POST', '/admin/certificates/generate', admin, {name: 'carol'})).status, 409)
    assert.equal((await f.call('POST', '/admin/certificates/generate', admin, {name: '../etc'})).status, 422)

    const list = await f.call('GET', '/admin/certificates?type=client', admin)
    assert.ok(list.json.certificates.some((c: {name: string; status: string}) => c.name === 'carol' && c.status === 'active'))
    assert.equal((await f.store.listClients({identity: 'carol'}))[0].status, 'active')

    const rv = await f.call('POST', '/admin/certificates/revoke', admin, {name: 'carol', reason: 'key-compromise', comment: 'laptop lost'})
    assert.equal(rv.status, 200)
    assert.equal(rv.json.revoked[0].status, 'revoked')
    assert.ok(readCrlSync(f.home)!.serials.has(rv.json.revoked[0].serial))
    const revoked = await f.call('GET', '/admin/certificates?status=revoked', admin)
    assert.deepEqual(revoked.json.certificates.map((c: {name: string}) => c.name), ['carol'])
    assert.equal((await f.store.listClients({identity: 'carol'}))[0].status, 'revoked')
    assert.equal((await f.call('POST', '/admin/certificates/revoke', admin, {name: 'carol'})).status, 409)
    assert.equal((await f.call('POST', '/admin/certificates/revoke', admin, {name: 'nobody'})).status, 404)
    assert.equal((await f.call('POST', '/admin/certificates/revoke', admin, {name: 'carol', reason: 'bored'})).status, 422)

    const events = await f.store.auditLog({actor: 'admin@example.com'})
    const issue = events.find((e) => e.event_type === 'cert.issue')!
    assert.equal(issue.identity, 'carol')
    assert.equal(issue.ip, '127.0.0.1')
    assert.equal(JSON.parse(events.find((e) => e.event_type === 'cert.revoke')!.event_data!).comment, 'laptop lost')
  })

  it('creates, lists, re-passwords and deletes users; the changes end sessions', async () => {
    const c = await f.call('POST', '/admin/users', admin, {client: 'initech', email: 'dave@initech.example', password: 'long enough pw', role: 'user'})
    assert.equal(c.status, 201)
    assert.equal(c.json.client_id, 'initech')
    assert.equal((await f.call('POST', '/admin/users', admin, {email: 'dave@initech.example', password: 'long enough pw'})).status, 409)
    assert.equal((await f.call('POST', '/admin/users', admin, {email: 'eve@x.example', password: 'short'})).status, 422)
    const list = await f.call('GET', '/admin/users', admin)
    assert.ok(list.json.users.some((u: {email: string}) => u.email === 'dave@initech.example'))
    assert.ok(list.json.users.every((u: Record<string, unknown>) => !('password_hash' in u)))

    const dave = await f.login('dave@initech.example', 'long enough pw')
    assert.equal((await f.call('POST', `/admin/users/${c.json.id}/password`, admin, {password: 'another long pw'})).status, 200)
    assert.equal((await f.call('GET', '/portal/profile', dave.access_token)).status, 401)
    await f.login('dave@initech.example', 'another long pw')
    const again = await f.login('dave@initech.example', 'another long pw')

    assert.equal((await f.call('DELETE', `/admin/users/${c.json.id}`, admin)).status, 200)
    assert.equal((await f.call('GET', '/portal/profile', again.access_token)).status, 401)
    assert.equal((await f.call('DELETE', `/admin/users/${c.json.id}`, admin)).status, 404)
    const profile = (await f.call('GET', '/portal/profile', admin)).json
    assert.deepEqual([profile.email, profile.role, profile.client_id, typeof profile.last_login_at], ['admin@example.com', 'admin', null, 'string'])
    const me = profile.id
    assert.equal((await f.call('DELETE', `/admin/users/${me}`, admin)).status, 409)

    const audit = await f.call('GET', '/admin/audit?limit=50', admin)
    const types = audit.json.events.map((e: {event_type: string}) => e.event_type)
    for (const t of ['user.create', 'user.password', 'user.delete']) assert.ok(types.includes(t), t)
  })

  it('answers stats from the records store and the overview from the broker (503 when it is down)', async () => {
    const s = await f.call('GET', '/admin/stats', admin)
    assert.equal(s.status, 200)
    assert.equal(s.json.users.total, 3)
    const o = await f.call('GET', '/admin/overview', admin)
    assert.equal(o.status, 503)
    assert.equal(o.json.error.code, 'E_BROKER_UNAVAILABLE')
    const g = await portalFixture({broker: {stats: async () => ({connections: 3, queues: [{messages: 5, name: 'q1'}]})}})
    try {
      const t = (await g.login('admin@example.com')).access_token
      const r = await g.call('GET', '/admin/overview', t)
      assert.equal(r.json.broker.connections, 3)
    } finally {
      await g.cleanup()
    }
  })

  it('counts stats once for many concurrent polls, and shows a new message within STATS_MAX_AGE_MS', async () => {
    const g = await portalFixture()
    try {
      const t = (await g.login('admin@example.com')).access_token
      let computed = 0
      const stats = g.store.stats.bind(g.store)
      g.store.stats = (at?: number) => (computed++, stats(at))
      const polls = await Promise.all(Array.from({length: 20}, () => g.call('GET', '/admin/stats', t)))
      assert.deepEqual(polls.map((p) => p.status), Array(20).fill(200))
      assert.ok(polls.every((p) => p.json.messages.total === 0))
      assert.equal(computed, 1)
      await seedMessages(g.store, 'acme', 1)
      const since = Date.now()
      let total = 0
      while (total === 0 && Date.now() - since < STATS_MAX_AGE_MS + 2000) {
        total = (await g.call('GET', '/admin/stats', t)).json.messages.total
        if (total === 0) await new Promise((r) => setTimeout(r, 50))
      }
      assert.equal(total, 1)
      assert.ok(Date.now() - since <= STATS_MAX_AGE_MS + 500, `the new message showed after ${Date.now() - since} ms`)
    } finally {
      await g.cleanup()
    }
  })

  it('sends a CSP without unsafe-inline and the other security headers on every answer', async () => {
    const r = await f.app.inject({method: 'GET', url: '/'})
    assert.equal(r.statusCode, 200)
    const csp = String(r.headers['content-security-policy'])
    assert.match(csp, /script-src 'self'/)
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/)
    assert.equal(r.headers['x-content-type-options'], 'nosniff')
    assert.equal(r.headers['x-frame-options'], 'DENY')
    assert.equal((await f.app.inject({method: 'GET', url: '/assets/../../package.json'})).statusCode, 404)
  })
})
