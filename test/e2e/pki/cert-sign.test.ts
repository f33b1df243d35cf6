import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {X509Certificate} from 'node:crypto'
import {existsSync, readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {BrokerClient} from '../../../src/lib/client/client.js'

let broker: BrokerProcess
/** the "other host" where a key is made and stays */
const host = tempHome('mq-csr-host-')

before(async () => {
  broker = await spawnBroker()
})

after(async () => {
  await broker?.cleanup()
  host.cleanup()
})

const mq = (args: string[]) => runCli(args, {env: broker.cliEnv()})
const pki = (f: string) => join(broker.home, 'pki', f)
const spki = (pem: string | Buffer) => new X509Certificate(pem).publicKey.export({format: 'der', type: 'spki'}).toString('hex')
const openssl = (args: string[]) => execFileSync('openssl', args, {cwd: host.dir, encoding: 'utf8', stdio: 'pipe'})

test('mq cert sign --csr: a certificate for a key that never leaves its host; the request is checked', async () => {
  openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=hal', '-keyout', 'hal.key', '-out', 'hal.csr'])
  let r = await mq(['cert', 'sign', '--csr', join(host.dir, 'hal.csr'), '--out', join(host.dir, 'hal.crt'), '--json'])
  assert.equal(r.code, 0, r.stderr)
  const rec = JSON.parse(r.stdout)
  assert.equal(rec.name, 'hal')
  assert.equal(rec.type, 'client')
  assert.equal(rec.key_path, undefined)
  assert.equal(existsSync(pki('issued/hal.key')), false, 'no key on the CA host')
  assert.equal(readFileSync(join(host.dir, 'hal.crt'), 'utf8'), readFileSync(pki('issued/hal.crt'), 'utf8'))
  // the host connects with its own key and the signed certificate, as identity hal
  const c = await BrokerClient.connect({host: '127.0.0.1', port: broker.port, timeoutMs: 15_000, tls: {ca: readFileSync(pki('ca.crt')), cert: readFileSync(join(host.dir, 'hal.crt')), checkServerIdentity: () => undefined, key: readFileSync(join(host.dir, 'hal.key'))}})
  await c.declareQueue('hal.jobs', {durable: true})
  await c.close()

  // a second request for the same name needs --force; renewing keeps the host's key
  r = await mq(['cert', 'sign', '--csr', join(host.dir, 'hal.csr')])
  assert.equal(r.code, 1)
  assert.match(r.stderr, /A certificate named hal already exists/)
  r = await mq(['cert', 'renew', 'hal', '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(spki(readFileSync(pki('issued/hal.crt'))), spki(readFileSync(join(host.dir, 'hal.crt'))))

  // a server request with its own SANs, under another name
  openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=edge', '-keyout', 'edge.key', '-out', 'edge.csr', '-addext', 'subjectAltName=DNS:edge.internal,IP:10.0.0.9'])
  r = await mq(['cert', 'sign', '--csr', join(host.dir, 'edge.csr'), '--type', 'server', '--name', 'edge-broker', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const edge = new X509Certificate(readFileSync(pki('issued/edge-broker.crt')))
  assert.match(edge.subject, /CN=edge-broker/)
  assert.equal(edge.subjectAltName, 'DNS:edge.internal, IP Address:10.0.0.9')
})

test('mq cert sign refuses a CA request, a request whose signature does not verify, a small key, and a file that is not PEM (exit 65, naming it)', async () => {
  openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=evil', '-keyout', 'evil.key', '-out', 'evil.csr', '-addext', 'basicConstraints=critical,CA:TRUE'])
  let r = await mq(['cert', 'sign', '--csr', join(host.dir, 'evil.csr'), '--json'])
  assert.equal(r.code, 65)
  assert.equal(JSON.parse(r.stdout).error.code, 'E_CSR_CA')
  assert.equal(existsSync(pki('issued/evil.crt')), false)

  // the same request with its subject changed after signing
  openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=mallory', '-keyout', 'm.key', '-out', 'm.csr', '-outform', 'DER'])
  const der = readFileSync(join(host.dir, 'm.csr'))
  const at = der.indexOf(Buffer.from('mallory'))
  der.write('mallorz', at)
  writeFileSync(join(host.dir, 'm.pem'), `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE REQUEST-----\n`)
  r = await mq(['cert', 'sign', '--csr', join(host.dir, 'm.pem')])
  assert.equal(r.code, 65)
  assert.match(r.stderr, /the request's signature does not verify/)

  openssl(['req', '-new', '-newkey', 'rsa:1024', '-nodes', '-subj', '/CN=tiny', '-keyout', 't.key', '-out', 't.csr'])
  r = await mq(['cert', 'sign', '--csr', join(host.dir, 't.csr')])
  assert.equal(r.code, 65)
  assert.match(r.stderr, /holds a 1024-bit RSA key: this CA signs RSA keys of 2048 bits or more/)

  const junk = join(host.dir, 'junk.csr')
  writeFileSync(junk, 'hello\n')
  r = await mq(['cert', 'sign', '--csr', junk, '--json'])
  assert.equal(r.code, 65)
  const err = JSON.parse(r.stdout).error
  assert.equal(err.code, 'E_BAD_PEM')
  assert.ok(err.message.startsWith(`${junk} is not a valid certificate request: no PEM block`), err.message)
  // a certificate is not a request
  r = await mq(['cert', 'sign', '--csr', pki('ca.crt')])
  assert.equal(r.code, 65)
  assert.match(r.stderr, /ca\.crt is not a valid certificate request: the PEM block is not a certificate request \(CERTIFICATE\)/)
})
