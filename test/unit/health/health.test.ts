import assert from 'node:assert/strict'
import {rmSync, writeFileSync} from 'node:fs'
import {after, before, describe, it} from 'node:test'

import {certificateHealth, crlHealth, healthHttpStatus, worst} from '../../../src/lib/health/index.js'
import type {MqHome} from '../../../src/lib/config/home.js'
import type {CertificateAuthority} from '../../../src/lib/pki/index.js'
import {tempHome} from '../../helpers/home.js'
import {testPki} from '../../helpers/pki.js'

describe('broker health', () => {
  const h = tempHome('mq-health-')
  let home: MqHome
  let ca: CertificateAuthority
  before(async () => {
    ;({ca, home} = await testPki(h.dir))
  })
  after(() => h.cleanup())

  it('overall status is the worst component; only failing answers 503', () => {
    assert.equal(worst([]), 'ok')
    assert.equal(worst(['ok', 'degraded', 'ok']), 'degraded')
    assert.equal(worst(['degraded', 'failing', 'ok']), 'failing')
    assert.deepEqual(['ok', 'degraded', 'failing'].map((s) => healthHttpStatus(s as 'ok')), [200, 200, 503])
  })

  it('CRL freshness: ok, degraded in its last quarter (at most 24 h), failing once past nextUpdate', async () => {
    const {nextUpdate} = await ca.publishCrl(7)
    const next = Math.floor(Date.parse(nextUpdate) / 1000) * 1000 // the CRL keeps whole seconds
    const fresh = crlHealth(home)
    assert.equal(fresh.status, 'ok')
    assert.equal(fresh.next_update, new Date(next).toISOString())
    assert.equal(fresh.hint, undefined)
    assert.equal(crlHealth(home, next - 25 * 3_600_000).status, 'ok')
    const near = crlHealth(home, next - 3_600_000)
    assert.equal(near.status, 'degraded')
    assert.match(near.hint!, /^Try this: mq cert crl/)
    assert.match(near.hint!, /refuse handshakes/)
    const past = crlHealth(home, next + 1000)
    assert.equal(past.status, 'failing')
    assert.match(past.hint!, /expired .* refuse handshakes/)
    // a one-day CRL warns in its last 6 hours, not for its whole life
    const day = await ca.publishCrl(1)
    const dayNext = Math.floor(Date.parse(day.nextUpdate) / 1000) * 1000
    assert.equal(crlHealth(home, dayNext - 7 * 3_600_000).status, 'ok')
    assert.equal(crlHealth(home, dayNext - 5 * 3_600_000).status, 'degraded')
  })

  it('a missing CRL is degraded and an unreadable one failing, each with a hint', () => {
    writeFileSync(home.crl, '-----BEGIN X509 CRL-----\nnot base64 at all\n-----END X509 CRL-----\n')
    const bad = crlHealth(home)
    assert.equal(bad.status, 'failing')
    assert.match(bad.hint!, /^Try this: /)
    rmSync(home.crl)
    const none = crlHealth(home)
    assert.equal(none.status, 'degraded')
    assert.match(none.hint!, /^Try this: mq cert crl/)
  })

  it('a republished CRL and a revoked certificate are seen at once (parsed files are kept only while unchanged)', async () => {
    await ca.issue('health-srv', {type: 'server'})
    await ca.publishCrl(7)
    const before = crlHealth(home)
    assert.equal(certificateHealth(home, ['health-srv']).status, 'ok')
    await ca.revoke('health-srv', 'superseded')
    const after = crlHealth(home)
    assert.equal(after.revoked, (before.revoked as number) + 1)
    const c = certificateHealth(home, ['health-srv'])
    assert.equal(c.status, 'failing')
    assert.match(String(c.error), /health-srv .* is revoked/)
  })
})
