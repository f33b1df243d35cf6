import assert from 'node:assert/strict'
import {generateKeyPairSync} from 'node:crypto'
import {after, before, describe, it} from 'node:test'

import {SignJWT, UnsecuredJWT, decodeJwt} from 'jose'

import {JWT_AUDIENCE, JWT_ISSUER, SESSION_RECHECK_MS} from '../../../src/lib/portal/tokens.js'
import {PASSWORD, type PortalFixture, portalFixture} from '../../helpers/portal.js'

describe('portal auth: login, JWT checks, refresh rotation, logout, rate limits', () => {
  let f: PortalFixture
  before(async () => {
    f = await portalFixture({portal: {login_max_per_account: 20, login_max_per_address: 40}})
  })
  after(() => f.cleanup())

  it('logs in with e-mail and password: a 15-minute EdDSA access token with iss/aud/exp/iat/jti and a refresh token', async () => {
    const r = await f.call('POST', '/portal/auth/login', undefined, {email: 'Alice@acme.example', password: PASSWORD})
    assert.equal(r.status, 200)
    assert.equal(r.json.token_type, 'Bearer')
    assert.equal(r.json.expires_in, 900)
    assert.equal(r.json.user.client_id, 'acme')
    assert.equal(JSON.parse(Buffer.from(r.json.access_token.split('.')[0], 'base64url').toString()).alg, 'EdDSA')
    const c = decodeJwt(r.json.access_token)
    assert.equal(c.iss, JWT_ISSUER)
    assert.equal(c.aud, JWT_AUDIENCE)
    assert.equal(c.exp! - c.iat!, 900)
    assert.ok(c.jti && c.sid)
    assert.equal(r.headers['cache-control'], 'no-store')
    // the refresh token is stored only as a hash
    const rows = await f.store.sql.all<{token_hash: string}>('SELECT token_hash FROM portal_refresh_tokens')
    assert.ok(rows.length > 0 && rows.every((x) => x.token_hash !== r.json.refresh_token && /^[0-9a-f]{64}$/.test(x.token_hash)))
    const p = await f.call('GET', '/portal/profile', r.json.access_token)
    assert.equal(p.status, 200)
    assert.deepEqual([p.json.email, p.json.role, p.json.client_id], ['alice@acme.example', 'user', 'acme'])
  })

  it('answers an unknown user and a wrong password the same way, in comparable time', async () => {
    const time = async (email: string) => {
      const t = process.hrtime.bigint()
      const r = await f.call('POST', '/portal/auth/login', undefined, {email, password: 'wrong password!'})
      return {ms: Number(process.hrtime.bigint() - t) / 1e6, r}
    }
    await time('warm-up@example.com')
    await time('alice@acme.example')
    const u: number[] = []
    const w: number[] = []
    let unknown!: Awaited<ReturnType<typeof time>>
    let wrong!: Awaited<ReturnType<typeof time>>
    for (let i = 0; i < 5; i++) {
      unknown = await time('nobody@example.com')
      wrong = await time('bob@globex.example')
      u.push(unknown.ms)
      w.push(wrong.ms)
    }
    assert.equal(unknown.r.status, 401)
    assert.deepEqual(unknown.r.json, wrong.r.json)
    assert.equal(wrong.r.json.error.code, 'E_LOGIN_FAILED')
    // both pay one scrypt: neither answers in a fraction of the other's time (medians)
    const med = (a: number[]) => a.sort((x, y) => x - y)[2]
    assert.ok(med(u) > med(w) / 2 && med(w) > med(u) / 2, `unknown ${med(u)} ms vs wrong password ${med(w)} ms`)
    const failed = await f.store.auditLog({type: 'auth.login_failed'})
    assert.ok(failed.some((e) => e.actor === 'nobody@example.com' && e.ip === '127.0.0.1'))
  })

  it('refuses tokens that are forged, unsigned, for another audience, or expired', async () => {
    const {access_token} = await f.login('bob@globex.example')
    const c = decodeJwt(access_token)
    const other = generateKeyPairSync('ed25519').privateKey
    const forge = (claims: Record<string, unknown>, key = other, exp = c.exp!) =>
      new SignJWT({...c, ...claims}).setProtectedHeader({alg: 'EdDSA'}).setExpirationTime(exp).sign(key)
    const cases: [string, string][] = [
      ['other key', await forge({})],
      ['alg none', new UnsecuredJWT({...c}).encode()],
      ['tampered role', access_token.split('.')[0] + '.' + Buffer.from(JSON.stringify({...c, role: 'admin'})).toString('base64url') + '.' + access_token.split('.')[2]],
      ['HS256 with a guessable secret', await new SignJWT({...c}).setProtectedHeader({alg: 'HS256'}).sign(new TextEncoder().encode('secret'))],
    ]
    for (const [what, token] of cases) {
      const r = await f.call('GET', '/portal/profile', token)
      assert.equal(r.status, 401, what)
      assert.equal(r.json.error.code, 'E_TOKEN_INVALID', what)
    }
    assert.equal((await f.call('GET', '/portal/profile')).json.error.code, 'E_UNAUTHENTICATED')
  })

  it('refuses an expired access token with E_TOKEN_EXPIRED (the UI then refreshes)', async () => {
    const g = await portalFixture({portal: {access_ttl_s: 1}})
    try {
      const {access_token} = await g.login('bob@globex.example')
      assert.equal((await g.call('GET', '/portal/profile', access_token)).status, 200)
      await new Promise((r) => setTimeout(r, 2100))
      const r = await g.call('GET', '/portal/profile', access_token)
      assert.equal(r.status, 401)
      assert.equal(r.json.error.code, 'E_TOKEN_EXPIRED')
    } finally {
      await g.cleanup()
    }
  })

  it('rotates refresh tokens; reusing one revokes the whole family (every token of the session)', async () => {
    const first = await f.login('bob@globex.example')
    const r1 = await f.call('POST', '/portal/auth/refresh', undefined, {refresh_token: first.refresh_token})
    assert.equal(r1.status, 200)
    assert.notEqual(r1.json.refresh_token, first.refresh_token)
    assert.equal((await f.call('GET', '/portal/profile', r1.json.access_token)).status, 200)
    // the first token again: a stolen copy
    const reuse = await f.call('POST', '/portal/auth/refresh', undefined, {refresh_token: first.refresh_token})
    assert.equal(reuse.status, 401)
    assert.equal(reuse.json.error.code, 'E_REFRESH_REUSED')
    const next = await f.call('POST', '/portal/auth/refresh', undefined, {refresh_token: r1.json.refresh_token})
    assert.equal(next.status, 401)
    assert.equal((await f.call('GET', '/portal/profile', r1.json.access_token)).json.error.code, 'E_SESSION_ENDED')
    assert.ok((await f.store.auditLog({type: 'auth.refresh_reuse'})).some((e) => e.actor === 'bob@globex.example' && e.severity === 'critical'))
    // another session of the same user is untouched
    const other = await f.login('bob@globex.example')
    assert.equal((await f.call('GET', '/portal/profile', other.access_token)).status, 200)
  })

  it('keeps answering other requests while a login computes its scrypt (the password check does not block the server)', async () => {
    const t = (await f.login('alice@acme.example')).access_token
    const started = performance.now()
    let loginDone = false
    const login = f.call('POST', '/portal/auth/login', undefined, {email: 'bob@globex.example', password: PASSWORD}).finally(() => (loginDone = true))
    // profile requests one after another for as long as the login takes: none waits for the scrypt
    const waits: number[] = []
    while (!loginDone) {
      const t0 = performance.now()
      assert.equal((await f.call('GET', '/portal/profile', t)).status, 200)
      waits.push(performance.now() - t0)
      // inject() on SQLite can answer without any I/O: let the event loop see the login's scrypt finish
      await new Promise((r) => setImmediate(r))
    }
    assert.equal((await login).status, 200)
    const loginMs = performance.now() - started
    assert.ok(waits.length >= 3, `only ${waits.length} profile answers during a ${loginMs.toFixed(0)} ms login`)
    assert.ok(Math.max(...waits) < loginMs / 2, `a profile request waited ${Math.max(...waits).toFixed(0)} ms during a ${loginMs.toFixed(0)} ms login`)
  })

  it('refuses a user deleted outside this portal (mq user delete, another portal) within SESSION_RECHECK_MS; changes made here at once', async () => {
    const g = await portalFixture()
    try {
      const bob = await g.login('bob@globex.example')
      const alice = await g.login('alice@acme.example')
      assert.equal((await g.call('GET', '/portal/messages', bob.access_token)).status, 200)
      // what another process does: the rows change, this portal is not told
      await g.store.deleteUser('bob@globex.example')
      const deleted = Date.now()
      let status = 200
      while (status === 200 && Date.now() - deleted < SESSION_RECHECK_MS + 2000) {
        status = (await g.call('GET', '/portal/messages', bob.access_token)).status
        if (status === 200) await new Promise((r) => setTimeout(r, 20))
      }
      assert.equal(status, 401)
      assert.ok(Date.now() - deleted <= SESSION_RECHECK_MS + 300, `still served ${Date.now() - deleted} ms after the deletion`)
      // through this portal's own API: refused on the very next request
      const admin = (await g.login('admin@example.com')).access_token
      const id = (await g.call('GET', '/portal/profile', alice.access_token)).json.id
      assert.equal((await g.call('DELETE', `/admin/users/${id}`, admin)).status, 200)
      assert.equal((await g.call('GET', '/portal/profile', alice.access_token)).json.error.code, 'E_SESSION_ENDED')
    } finally {
      await g.cleanup()
    }
  })

  it('logout ends the session at once: access and refresh tokens stop working', async () => {
    const t = await f.login('bob@globex.example')
    assert.equal((await f.call('POST', '/portal/auth/logout', t.access_token)).status, 200)
    assert.equal((await f.call('GET', '/portal/profile', t.access_token)).json.error.code, 'E_SESSION_ENDED')
    assert.equal((await f.call('POST', '/portal/auth/refresh', undefined, {refresh_token: t.refresh_token})).status, 401)
  })

  it('a logout while a session check is in flight is not undone by that check (its stale answer is not cached)', async () => {
    const t = await f.login('alice@acme.example')
    // the token's first use: signature checked, then its session read; hold that read until the logout is done
    const sql = f.store.sql
    const get = sql.get.bind(sql)
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    let reading!: () => void
    const readStarted = new Promise<void>((r) => (reading = r))
    sql.get = (async (q: string, params?: Parameters<typeof get>[1]) => {
      if (q.includes('FROM portal_sessions s JOIN users')) {
        const row = await get(q, params)
        reading()
        await held
        return row
      }
      return get(q, params)
    }) as typeof sql.get
    try {
      const inFlight = f.call('GET', '/portal/profile', t.access_token)
      await readStarted
      sql.get = get
      assert.equal((await f.call('POST', '/portal/auth/logout', t.access_token)).status, 200)
      release()
      assert.equal((await inFlight).status, 200, 'the request that began before the logout may finish')
      assert.equal((await f.call('GET', '/portal/profile', t.access_token)).json.error?.code, 'E_SESSION_ENDED')
    } finally {
      sql.get = get
      release()
    }
  })

  it('rate-limits failed logins per account (even with the right password after) and per source address', async () => {
    const g = await portalFixture({portal: {login_max_per_account: 3, login_max_per_address: 5}})
    try {
      const attempt = (email: string, password: string, ip: string) => g.app.inject({method: 'POST', payload: {email, password}, remoteAddress: ip, url: '/portal/auth/login'})
      for (let i = 0; i < 3; i++) assert.equal((await attempt('bob@globex.example', 'nope nope', `10.0.0.${i}`)).statusCode, 401)
      const limited = await attempt('bob@globex.example', PASSWORD, '10.0.0.9')
      assert.equal(limited.statusCode, 429)
      assert.equal(limited.json().error.code, 'E_RATE_LIMITED')
      assert.ok(Number(limited.headers['retry-after']) > 0)
      // alice is not affected by bob's failures
      assert.equal((await attempt('alice@acme.example', PASSWORD, '10.0.0.9')).statusCode, 200)
      // one address trying many accounts
      for (let i = 0; i < 5; i++) assert.equal((await attempt(`guess${i}@example.com`, 'nope nope', '192.0.2.7')).statusCode, 401)
      assert.equal((await attempt('alice@acme.example', PASSWORD, '192.0.2.7')).statusCode, 429)
      assert.equal((await attempt('alice@acme.example', PASSWORD, '192.0.2.8')).statusCode, 200)
    } finally {
      await g.cleanup()
    }
  })

  it('validates bodies with JSON errors and the right status, never a stack', async () => {
    const cases: [unknown, number, string][] = [
      ['{not json', 400, 'E_BAD_JSON'],
      [{email: 'a@b'}, 422, 'E_VALIDATION'],
      [{email: 'a@b', password: 'x', extra: 1}, 422, 'E_VALIDATION'],
    ]
    for (const [body, status, code] of cases) {
      const r = await f.call('POST', '/portal/auth/login', undefined, body)
      assert.equal(r.status, status, JSON.stringify(body))
      assert.equal(r.json.error.code, code)
      assert.equal(typeof r.json.error.message, 'string')
      assert.doesNotMatch(JSON.stringify(r.json), /at .*\.js:\d+/)
    }
    const nf = await f.call('GET', '/portal/nothing')
    assert.equal(nf.status, 404)
    assert.equal(nf.json.error.code, 'E_NOT_FOUND')
  })
})
