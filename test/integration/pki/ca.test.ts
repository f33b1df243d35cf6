import assert from 'node:assert/strict'
import {execFileSync, spawnSync} from 'node:child_process'
import {createPrivateKey} from 'node:crypto'
import {readFileSync, statSync, writeFileSync} from 'node:fs'
import {after, before, describe, test} from 'node:test'
import tls from 'node:tls'

import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {ExitCode, MqError} from '../../../src/lib/errors.js'
import {CertificateAuthority, CrlWatcher, clientTlsOptions, peerIdentity, serverTlsOptions, verifyIdentityCerts} from '../../../src/lib/pki/index.js'
import {tempHome} from '../../helpers/home.js'

const cfg = defaultConfig().pki

function openssl(args: string[], cwd: string): {code: number; out: string} {
  const r = spawnSync('openssl', args, {cwd, encoding: 'utf8'})
  return {code: r.status ?? 1, out: r.stdout + r.stderr}
}

/** Handshake a client against a server with our mTLS options; resolves with the identity the server saw, or the error. */
async function handshake(serverOpts: tls.TlsOptions, clientOpts: tls.ConnectionOptions): Promise<{ok: boolean; cn?: string; error?: string}> {
  return new Promise((resolve) => {
    let seen: string | undefined
    const srv = tls.createServer(serverOpts, (sock) => {
      seen = peerIdentity(sock)?.cn
      sock.end('hi')
    })
    srv.on('tlsClientError', () => {})
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as {port: number}).port
      const c = tls.connect({...clientOpts, host: '127.0.0.1', port})
      c.on('data', () => {})
      c.on('end', () => {
        srv.close()
        resolve({cn: seen, ok: seen !== undefined})
      })
      c.on('error', (err) => {
        srv.close()
        resolve({error: err.message, ok: false})
      })
    })
  })
}

describe('certificate authority', () => {
  const h = tempHome()
  const other = tempHome()
  const home = new MqHome(h.dir)
  const ca = CertificateAuthority.open(home, cfg)

  before(async () => {
    await ca.init()
    await ca.issue('broker', {type: 'server'})
    await ca.issue('alice', {type: 'client'})
    await ca.issue('mallory', {type: 'client'})
    await ca.issue('old', {notAfter: new Date(Date.now() - 3_600_000), notBefore: new Date(Date.now() - 7_200_000), type: 'client'})
    await ca.revoke('mallory', 'key-compromise')
    const oca = CertificateAuthority.open(new MqHome(other.dir), cfg)
    await oca.init()
    await oca.issue('alice', {type: 'client'})
  })
  after(() => {
    h.cleanup()
    other.cleanup()
  })

  test('the CA certificate: CA:true critical, keyCertSign+cRLSign, SHA-256, RSA >= 3072, key ids', () => {
    const text = execFileSync('openssl', ['x509', '-in', home.caCert, '-noout', '-text'], {encoding: 'utf8'})
    assert.match(text, /Basic Constraints: critical\s+CA:TRUE/)
    assert.match(text, /Key Usage: critical\s+Certificate Sign, CRL Sign/)
    assert.match(text, /sha256WithRSAEncryption/)
    assert.match(text, /Public-Key: \((\d+) bit\)/)
    assert.ok(Number(/Public-Key: \((\d+) bit\)/.exec(text)![1]) >= 3072)
    assert.match(text, /Subject Key Identifier/)
    assert.match(text, /Authority Key Identifier/)
  })

  test('issued certificates: EKU, SANs, 64+ bit serial, SHA-256; openssl verify accepts them', () => {
    const srv = execFileSync('openssl', ['x509', '-in', home.issuedCert('broker'), '-noout', '-text'], {encoding: 'utf8'})
    assert.match(srv, /TLS Web Server Authentication/)
    assert.match(srv, /DNS:localhost, IP Address:127\.0\.0\.1/)
    assert.match(srv, /Subject: CN ?= ?broker/)
    const cli = execFileSync('openssl', ['x509', '-in', home.issuedCert('alice'), '-noout', '-text'], {encoding: 'utf8'})
    assert.match(cli, /TLS Web Client Authentication/)
    assert.ok(ca.get('alice').serial.length >= 16)
    assert.equal(openssl(['verify', '-CAfile', 'ca.crt', 'issued/alice.crt', 'issued/broker.crt'], home.pki).code, 0)
  })

  test('openssl enforces the CRL: good accepted, revoked reported revoked; the CRL verifies', () => {
    const good = openssl(['verify', '-crl_check', '-CAfile', 'ca.crt', '-CRLfile', 'crl.pem', 'issued/alice.crt'], home.pki)
    assert.equal(good.code, 0, good.out)
    const bad = openssl(['verify', '-crl_check', '-CAfile', 'ca.crt', '-CRLfile', 'crl.pem', 'issued/mallory.crt'], home.pki)
    assert.notEqual(bad.code, 0)
    assert.match(bad.out, /certificate revoked/)
    const crl = openssl(['crl', '-in', 'crl.pem', '-noout', '-CAfile', 'ca.crt', '-text'], home.pki)
    assert.match(crl.out, /verify OK/)
    assert.match(crl.out, /X509v3 CRL Number/)
    assert.match(crl.out, /Key Compromise/)
    assert.match(readFileSync(home.crl, 'utf8'), /^-----BEGIN X509 CRL-----/)
  })

  test('a Node TLS server with our CA and CRL: valid accepted; revoked, foreign and expired refused', async () => {
    const s = serverTlsOptions(home, 'broker')
    const ok = await handshake(s, clientTlsOptions(home, 'alice'))
    assert.deepEqual(ok, {cn: 'alice', ok: true})
    const revoked = await handshake(s, clientTlsOptions(home, 'mallory'))
    assert.equal(revoked.ok, false)
    const foreign = await handshake(s, {...clientTlsOptions(new MqHome(other.dir), 'alice'), ca: readFileSync(home.caCert)})
    assert.equal(foreign.ok, false)
    const expired = await handshake(s, clientTlsOptions(home, 'old'))
    assert.equal(expired.ok, false)
  })

  test('private keys are 0600 in 0700 directories', () => {
    for (const f of [home.caKey, home.issuedKey('alice'), home.issuedKey('broker')]) assert.equal(statSync(f).mode & 0o777, 0o600, f)
    assert.equal(statSync(home.pki).mode & 0o777, 0o700)
  })

  test('a looser existing key file is refused', async () => {
    const h2 = tempHome()
    try {
      const c2 = CertificateAuthority.open(new MqHome(h2.dir), cfg)
      await c2.init()
      const k = new MqHome(h2.dir).caKey
      execFileSync('chmod', ['644', k])
      await assert.rejects(c2.issue('x', {type: 'client'}), (err: unknown) => err instanceof MqError && err.code === 'E_KEY_PERMISSIONS' && err.exit === ExitCode.NOPERM)
    } finally {
      h2.cleanup()
    }
  })

  test('concurrent issues from two CA handles lose nothing', async () => {
    const a = CertificateAuthority.open(home, cfg)
    const b = CertificateAuthority.open(home, cfg)
    const names = Array.from({length: 6}, (_, i) => `c${i}`)
    await Promise.all(names.map((n, i) => (i % 2 ? a : b).issue(n, {type: 'client'})))
    const listed = new Set(ca.list().map((c) => c.name))
    for (const n of names) assert.ok(listed.has(n), n)
  })

  test('CRL reload: the watcher reports a new revocation', async () => {
    const w = new CrlWatcher(home, 50)
    const changed = new Promise<Set<string>>((resolve) => w.once('change', (_pem: Buffer, serials: Set<string>) => resolve(serials)))
    w.start()
    const [rec] = await ca.revoke('c0')
    // the watcher's timer is unref'd (it must never keep a server alive): hold the loop open here
    const guard = setTimeout(() => {}, 5000)
    const serials = await changed
    clearTimeout(guard)
    w.stop()
    assert.ok(serials.has(rec.serial))
  })

  test('end-to-end identities are certified, verifiable, and refused once revoked', async () => {
    const id = await ca.keygen('bob')
    assert.equal(statSync(`${home.keys}/bob.key`).mode & 0o777, 0o600)
    assert.equal(verifyIdentityCerts(home, 'bob', id.encCertPem, id.signCertPem).fingerprint, id.fingerprint)
    // a certificate for someone else, presented as bob's, is refused
    const eve = await ca.keygen('eve')
    assert.throws(() => verifyIdentityCerts(home, 'bob', eve.encCertPem, eve.signCertPem), /belongs to eve/)
    // a TLS client certificate is not an e2e key
    assert.throws(() => verifyIdentityCerts(home, 'alice', readFileSync(home.issuedCert('alice'), 'utf8'), readFileSync(home.issuedCert('alice'), 'utf8')), /E2E|e2e/)
    // a key certified by another CA is refused
    const foreign = await CertificateAuthority.open(new MqHome(other.dir), cfg).keygen('bob')
    assert.throws(() => verifyIdentityCerts(home, 'bob', foreign.encCertPem, foreign.signCertPem), (err: unknown) => err instanceof MqError && err.code === 'E_IDENTITY_UNTRUSTED')
    await ca.revoke('bob', 'key-compromise')
    assert.throws(() => verifyIdentityCerts(home, 'bob', id.encCertPem, id.signCertPem), (err: unknown) => err instanceof MqError && err.code === 'E_IDENTITY_REVOKED')
  })

  test('a passphrase-protected CA key needs the passphrase', async () => {
    const h3 = tempHome()
    try {
      const home3 = new MqHome(h3.dir)
      await CertificateAuthority.open(home3, cfg, {passphrase: 's3cret'}).init()
      assert.match(readFileSync(home3.caKey, 'utf8'), /ENCRYPTED PRIVATE KEY/)
      const saved = process.env.MQ_CA_PASSPHRASE
      delete process.env.MQ_CA_PASSPHRASE
      try {
        await assert.rejects(CertificateAuthority.open(home3, cfg).issue('x', {type: 'client'}), (err: unknown) => err instanceof MqError && err.code === 'E_CA_LOCKED')
        await assert.rejects(CertificateAuthority.open(home3, cfg, {passphrase: 'wrong'}).issue('x', {type: 'client'}), (err: unknown) => err instanceof MqError && err.code === 'E_CA_PASSPHRASE')
      } finally {
        if (saved !== undefined) process.env.MQ_CA_PASSPHRASE = saved
      }
      const rec = await CertificateAuthority.open(home3, cfg, {passphrase: 's3cret'}).issue('x', {type: 'client'})
      assert.equal(rec.status, 'active')
    } finally {
      h3.cleanup()
    }
  })

  test('the CA key passphrase is stretched with scrypt (not PBKDF2 at 2,048 iterations); old PBKDF2 keys still load', async () => {
    const h5 = tempHome()
    try {
      const home5 = new MqHome(h5.dir)
      await CertificateAuthority.open(home5, cfg, {passphrase: 's3cret'}).init()
      // read the key file's algorithm with openssl itself, as an auditor would
      const parsed = execFileSync('openssl', ['asn1parse', '-in', home5.caKey], {encoding: 'utf8'})
      assert.match(parsed, /:scrypt/)
      assert.doesNotMatch(parsed, /PBKDF2/)
      assert.match(parsed, /INTEGER +:4000\n.*INTEGER +:08\n.*INTEGER +:05/)
      // a key written the old way (Node's export: PBKDF2, 2,048 iterations) is still read
      const plain = createPrivateKey({key: readFileSync(home5.caKey, 'utf8'), passphrase: 's3cret'})
      const old = plain.export({cipher: 'aes-256-cbc', format: 'pem', passphrase: 's3cret', type: 'pkcs8'}) as string
      assert.match(execFileSync('openssl', ['asn1parse'], {encoding: 'utf8', input: old}), /PBKDF2/)
      writeFileSync(home5.caKey, old, {mode: 0o600})
      const rec = await CertificateAuthority.open(home5, cfg, {passphrase: 's3cret'}).issue('y', {type: 'client'})
      assert.equal(rec.status, 'active')
    } finally {
      h5.cleanup()
    }
  })

  test('a corrupt CA certificate is reported as bad data and nothing is written', async () => {
    const h4 = tempHome()
    try {
      const home4 = new MqHome(h4.dir)
      const c4 = CertificateAuthority.open(home4, cfg)
      await c4.init()
      writeFileSync(home4.caCert, '-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n')
      const before = readFileSync(`${home4.pki}/index.json`, 'utf8')
      await assert.rejects(c4.issue('x', {type: 'client'}), (err: unknown) => err instanceof MqError && err.code === 'E_CA_CORRUPT' && err.exit === 65)
      assert.equal(readFileSync(`${home4.pki}/index.json`, 'utf8'), before)
    } finally {
      h4.cleanup()
    }
  })
})
