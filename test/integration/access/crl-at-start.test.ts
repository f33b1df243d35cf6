/**
 * pki/crl.pem missing at start: a broker, proxy or relay with the local CA rebuilds it from
 * pki/index.json, so a revoked certificate stays refused; without the CA key it refuses to start.
 * /health: a CRL our CA did not sign is failing; without the monitor right only the verdicts show.
 */
import assert from 'node:assert/strict'
import {cpSync, existsSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {request} from 'node:https'
import {join} from 'node:path'
import tls from 'node:tls'
import {after, before, describe, test} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {CertificateAuthority, clientTlsOptions} from '../../../src/lib/pki/index.js'
import {spawnRelay} from '../../e2e/relay/relay-process.js'
import {spawnMq} from '../../e2e/pipeline/spawn.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {tempHome} from '../../helpers/home.js'
import {freePort, uniqueName} from '../../helpers/services.js'

/** Whether a mutual-TLS handshake with `identity` completes on port (over the CA, no name check). */
function handshake(home: MqHome, identity: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tls.connect({...clientTlsOptions(home, identity), checkServerIdentity: () => undefined, host: '127.0.0.1', port})
    s.once('secureConnect', () => {
      // TLS 1.3: the server's verdict on our certificate arrives after the client's handshake ends
      s.once('data', () => {})
      setTimeout(() => {
        const ok = !s.destroyed
        s.destroy()
        resolve(ok)
      }, 300)
    })
    s.once('error', () => resolve(false))
    s.once('close', () => resolve(false))
  })
}

function getJson(home: MqHome, port: number, path: string, identity?: string): Promise<{status: number; body: Record<string, any>; text: string}> {
  return new Promise((resolve, reject) => {
    // the client side checks the broker against the CA only (as mq broker health does): the test may have planted a foreign CRL
    const o = identity ? {...clientTlsOptions(home, identity), crl: undefined} : {ca: readFileSync(home.caCert)}
    const req = request({...o, checkServerIdentity: () => undefined, host: '127.0.0.1', path, port}, (res) => {
      let b = ''
      res.on('data', (d) => (b += d))
      res.on('end', () => resolve({body: JSON.parse(b), status: res.statusCode ?? 0, text: b}))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('a missing CRL is rebuilt at start from the local CA', () => {
  let broker: BrokerProcess
  let home: MqHome
  before(async () => {
    broker = await spawnBroker()
    home = new MqHome(broker.home)
    const ca = CertificateAuthority.open(home, defaultConfig().pki)
    await ca.issue('mallory', {type: 'client'})
    await ca.revoke('mallory', 'key-compromise')
    await broker.stop()
  })
  after(() => broker?.cleanup())

  test('broker: restarted without pki/crl.pem, it rebuilds it and still refuses the revoked certificate', async () => {
    rmSync(home.crl)
    await broker.restart()
    assert.match(broker.log(), /pki\/crl\.pem was missing: rebuilt it from pki\/index\.json.*revoked=\d/)
    assert.ok(existsSync(home.crl))
    await assert.rejects(broker.connect('mallory', {timeoutMs: 5000}))
    const admin = await broker.connect('admin')
    await admin.close()
    await broker.stop()
  })

  test('proxy: started without pki/crl.pem, it rebuilds it and refuses the revoked certificate', async () => {
    rmSync(home.crl)
    const port = await freePort()
    const p = await spawnMq(['proxy', 'start', '--home', home.root, '--port', String(port), '--rate', '0'], {MQ_REDIS_KEY_PREFIX: `${uniqueName('crl')}:`}, 'proxy ready')
    try {
      assert.match(p.log(), /rebuilt it from pki\/index\.json/)
      assert.equal(await handshake(home, 'mallory', port), false)
      assert.equal(await handshake(home, 'admin', port), true)
    } finally {
      await p.stop()
    }
  })

  test('relay (TLS listener): started without pki/crl.pem, it rebuilds it and refuses the revoked certificate', async () => {
    rmSync(home.crl)
    const tlsPort = await freePort()
    const r = await spawnRelay({args: ['--tls', '--port', String(await freePort())], env: {MQ_RELAY_TLS_PORT: String(tlsPort)}, home: home.root})
    try {
      assert.match(r.stderr(), /rebuilt it from pki\/index\.json/)
      assert.equal(await handshake(home, 'mallory', tlsPort), false)
      assert.equal(await handshake(home, 'admin', tlsPort), true)
    } finally {
      await r.stop()
    }
  })

  test('without the CA key (a CA kept elsewhere) and with revocations in the index, the broker refuses to start', async () => {
    const t = tempHome('mq-crl-nokey-')
    try {
      cpSync(home.root, t.dir, {recursive: true})
      rmSync(join(t.dir, 'pki', 'crl.pem'))
      rmSync(join(t.dir, 'pki', 'ca.key'))
      rmSync(join(t.dir, 'data', 'broker.lock'), {force: true})
      await assert.rejects(spawnBroker({home: t.dir}), (e: Error) => /exited with 78/.test(e.message) && /is missing: .*index\.json lists 1 revoked certificate/.test(e.message))
      assert.equal(existsSync(join(t.dir, 'pki', 'ca.key')), false, 'no new CA was minted in its place')
    } finally {
      t.cleanup()
    }
  })
})

describe('/health and the CRL', () => {
  let broker: BrokerProcess
  let home: MqHome
  before(async () => {
    broker = await spawnBroker()
    home = new MqHome(broker.home)
  })
  after(() => broker?.cleanup())

  test('anonymous /health: verdicts per component, no paths, hosts or backends; a monitor sees the details', async () => {
    const anon = await getJson(home, broker.apiPort, '/health')
    assert.equal(anon.status, 200)
    assert.equal(anon.body.status, 'ok')
    for (const [name, c] of Object.entries(anon.body.components as Record<string, Record<string, unknown>>)) {
      assert.deepEqual(Object.keys(c).filter((k) => k !== 'hint'), ['status'], `${name}: ${JSON.stringify(c)}`)
    }
    assert.ok(!anon.text.includes(broker.home), 'no absolute path of the home')
    assert.doesNotMatch(anon.text, /sqlite|crl\.pem|127\.0\.0\.1|connections|uptime/i)
    const admin = await getJson(home, broker.apiPort, '/health', 'admin')
    assert.match(admin.body.components.store.backend, /^sqlite/)
    assert.equal(typeof admin.body.components.crl.next_update, 'string')
  })

  test('a CRL signed by another CA shows as failing', async () => {
    const other = tempHome('mq-other-ca-')
    try {
      const foreign = CertificateAuthority.open(new MqHome(other.dir), {...defaultConfig().pki, ca_cn: 'someone else'})
      await foreign.init()
      writeFileSync(home.crl, readFileSync(join(other.dir, 'pki', 'crl.pem')))
      const r = await getJson(home, broker.apiPort, '/health')
      assert.equal(r.status, 503)
      assert.equal(r.body.components.crl.status, 'failing')
      assert.match(r.body.components.crl.hint, /mq cert crl/)
      const admin = await getJson(home, broker.apiPort, '/health', 'admin')
      assert.match(admin.body.components.crl.error, /not signed by our CA/)
    } finally {
      other.cleanup()
    }
  })
})
