/**
 * Issue 18, failure 8: a proxy with --processes 2 and two workers started at once on a fresh
 * home. Each process issues the development certificates it misses; under the PKI index lock an
 * existing valid certificate is reused, so none revokes another's and every request is accepted.
 */
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {request} from 'node:https'
import {test} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {certificateHealth} from '../../../src/lib/health/index.js'
import {CertificateAuthority} from '../../../src/lib/pki/index.js'
import {spawnBroker} from '../../helpers/broker.js'
import {tempHome} from '../../helpers/home.js'
import {REDIS_URL, freePort, uniqueName} from '../../helpers/services.js'
import {spawnMq} from './spawn.js'

function post(port: number, home: MqHome, n: number): Promise<string> {
  return new Promise((resolve) => {
    const req = request({ca: readFileSync(home.caCert), cert: readFileSync(home.issuedCert('alice')), headers: {'content-type': 'application/json'}, host: '127.0.0.1', key: readFileSync(home.issuedKey('alice')), method: 'POST', path: '/api/v1/messages', port, agent: false}, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve(res.statusCode === 202 ? '202' : `${res.statusCode} ${body}`))
    })
    req.on('error', (e) => resolve(e.message))
    req.end(JSON.stringify({message_body: `m${n}`, sender_number: '+4915200000000'}))
  })
}

test('proxy --processes 2 and two workers started at once on a fresh home: one certificate each, every request accepted', {timeout: 180_000}, async () => {
  const h = tempHome('mq-first-start-')
  const home = new MqHome(h.dir)
  const env = {MQ_REDIS_KEY_PREFIX: `${uniqueName('first')}:`, MQ_REDIS_URL: REDIS_URL}
  const broker = await spawnBroker({env, home: h.dir})
  const procs: Awaited<ReturnType<typeof spawnMq>>[] = []
  try {
    const penv = {...env, MQ_CLIENT_API: `https://127.0.0.1:${broker.apiPort}`, MQ_HOME: h.dir}
    const port = await freePort()
    // all three at once: proxy-server, proxy and worker are missing and each process wants them
    procs.push(
      ...(await Promise.all([
        spawnMq(['proxy', 'start', '--home', h.dir, '--port', String(port), '--rate', '0', '--processes', '2'], penv, 'proxy ready'),
        spawnMq(['worker', 'start', '--home', h.dir, '--metrics-port', '0', '--name', 'w1'], penv, 'worker ready'),
        spawnMq(['worker', 'start', '--home', h.dir, '--metrics-port', '0', '--name', 'w2'], penv, 'worker ready'),
      ])),
    )
    const ca = CertificateAuthority.open(home, defaultConfig().pki)
    const issued = ca.list().filter((c) => ['proxy', 'proxy-server', 'worker'].includes(c.name))
    assert.deepEqual(issued.filter((c) => c.status !== 'active').map((c) => `${c.name} ${c.status} ${c.reason ?? ''}`), [], 'a concurrent start replaced (revoked) a certificate another process was using')
    assert.equal(issued.length, 3)
    assert.equal(certificateHealth(home, ['proxy', 'proxy-server', 'worker']).status, 'ok')
    await ca.issue('alice', {type: 'client'})
    // both proxy processes serve (each request is a new connection; they spread over them)
    const statuses: string[] = []
    for (let i = 0; i < 40; i += 4) statuses.push(...(await Promise.all([0, 1, 2, 3].map((k) => post(port, home, i + k)))))
    assert.deepEqual(statuses.filter((s) => s !== '202'), [], 'requests not accepted')
  } finally {
    for (const p of procs) await p.stop()
    await broker.cleanup()
    h.cleanup()
  }
})

test('a server whose own certificate is revoked says so in its health', {timeout: 60_000}, async () => {
  const h = tempHome('mq-own-revoked-')
  const home = new MqHome(h.dir)
  try {
    const ca = CertificateAuthority.open(home, defaultConfig().pki)
    await ca.ensureDevelopment({clients: ['worker'], servers: ['broker']})
    assert.equal(certificateHealth(home, ['broker', 'worker']).status, 'ok')
    // a second "first start" reuses what is there: nothing issued, nothing revoked
    assert.deepEqual(await ca.ensureDevelopment({clients: ['worker'], servers: ['broker']}), [])
    await ca.issue('worker', {force: true, type: 'client'}) // an operator's re-issue revokes the old one...
    const oldWorker = CertificateAuthority.open(home, defaultConfig().pki).list().find((c) => c.name === 'worker' && c.status === 'revoked')
    assert.ok(oldWorker)
    await ca.revoke('broker')
    const c = certificateHealth(home, ['broker'])
    assert.equal(c.status, 'failing')
    assert.match(String(c.error), /certificate of broker \(serial [0-9a-f]+\) is revoked/)
  } finally {
    h.cleanup()
  }
})
