import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {X509Certificate} from 'node:crypto'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'

let broker: BrokerProcess

before(async () => {
  broker = await spawnBroker()
})

after(async () => {
  await broker?.cleanup()
})

const mq = (args: string[]) => runCli(args, {env: broker.cliEnv()})
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const pki = (f: string) => join(broker.home, 'pki', f)
const spki = (pem: string | Buffer) => new X509Certificate(pem).publicKey.export({format: 'der', type: 'spki'}).toString('hex')

test('mq cert renew: a new serial and validity for the same name, key and type; the old one is revoked only after; connections go on with the new one', async () => {
  let r = await mq(['cert', 'issue', 'ivy', '--type', 'client', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const before = JSON.parse(r.stdout)
  const keyBefore = readFileSync(before.key_path)
  const spkiBefore = spki(readFileSync(before.cert_path))
  const live = await broker.connect('ivy')
  let closed = false
  live.on('close', () => (closed = true))

  r = await mq(['cert', 'renew', 'ivy', '--days', '30', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const {renewed, superseded} = JSON.parse(r.stdout)
  assert.notEqual(renewed.serial, before.serial)
  assert.equal(superseded.serial, before.serial)
  assert.equal(superseded.status, 'revoked')
  assert.equal(superseded.reason, 'superseded')
  assert.equal(renewed.type, 'client')
  assert.equal(renewed.cert_path, before.cert_path)
  const days = (Date.parse(renewed.not_after) - Date.now()) / 86_400_000
  assert.ok(days > 29.9 && days < 30.1, `validity ${days} days`)
  // the key did not move or change, and the new certificate carries it
  assert.deepEqual(readFileSync(before.key_path), keyBefore)
  assert.equal(spki(readFileSync(renewed.cert_path)), spkiBefore)
  execFileSync('openssl', ['verify', '-crl_check', '-CAfile', pki('ca.crt'), '-CRLfile', pki('crl.pem'), renewed.cert_path], {stdio: 'pipe'})
  r = await mq(['cert', 'list', '--status', 'revoked', '--json'])
  assert.ok(JSON.parse(r.stdout).some((c: {serial: string; reason: string}) => c.serial === before.serial && c.reason === 'superseded'))

  // the broker sees the new CRL: the connection made with the old certificate is closed, a new one works
  for (let i = 0; i < 100 && !closed; i++) await sleep(100)
  assert.ok(closed, 'the connection of the superseded certificate was closed')
  const again = await broker.connect('ivy')
  await again.declareQueue('ivy.inbox', {durable: true})
  await again.close()

  r = await mq(['cert', 'renew', 'nobody'])
  assert.equal(r.code, 66)
  assert.match(r.stderr, /No active server or client certificate named "nobody" to renew/)
})

test("mq cert renew of the broker's own server certificate keeps its SANs and the broker serves it without a restart", async () => {
  const old = new X509Certificate(readFileSync(pki('issued/broker.crt')))
  const r = await mq(['cert', 'renew', 'broker'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /type: +server/)
  assert.match(r.stderr, /revoked the previous certificate \(serial [0-9a-f]+\) as superseded/)
  const now = new X509Certificate(readFileSync(pki('issued/broker.crt')))
  assert.notEqual(now.serialNumber, old.serialNumber)
  assert.equal(now.subjectAltName, old.subjectAltName)
  // the broker reloads its certificate with the CRL: a new connection is served the renewed one
  // (until its CRL check, broker.crl_check_interval_ms, a client that checks the CRL refuses the old one)
  let served = ''
  for (let i = 0; i < 100 && served !== now.serialNumber; i++) {
    try {
      const c = await broker.connect()
      served = (c as unknown as {sock: import('node:tls').TLSSocket}).sock.getPeerX509Certificate()!.serialNumber
      await c.close()
    } catch (error) {
      assert.match((error as Error).message, /certificate revoked/)
    }
    if (served !== now.serialNumber) await sleep(100)
  }
  assert.equal(served, now.serialNumber)
})

