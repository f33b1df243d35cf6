import {X509Certificate, createVerify} from 'node:crypto'
import {EventEmitter} from 'node:events'
import {existsSync, readFileSync, readdirSync, statSync} from 'node:fs'
import {join} from 'node:path'
import {type ConnectionOptions, type TLSSocket, type TlsOptions, createSecureContext} from 'node:tls'

import type * as x509 from '@peculiar/x509'

import type {MqHome} from '../config/home.js'
import {ExitCode, MqError} from '../errors.js'
import {clientLogger} from '../log.js'
import {assertPrivateFile, writeFileAtomic} from '../util/fs.js'
import {normSerial, parseCrl} from './certs.js'
import {badPem, parseCertPem, parseKeyPem} from './pem.js'

function readMaterial(home: MqHome, name: string, kind: 'server' | 'client'): {cert: Buffer; key: Buffer; ca: Buffer} {
  const certFile = home.issuedCert(name)
  const keyFile = home.issuedKey(name)
  if (!existsSync(home.caCert)) {
    // a client without a CA usually means a fresh home: say how to get one instead of creating a second CA
    const hint =
      kind === 'client'
        ? `Try this: start a broker on this machine (mq broker start creates a development CA and the admin identity in ${home.pki}), or copy the broker's pki/ca.crt and your client certificate into it (or pass --home).`
        : 'Try this: mq cert ca init'
    throw new MqError('E_CA_MISSING', `No CA certificate at ${home.caCert}.`, {exit: ExitCode.NOPERM, hint})
  }
  if (!existsSync(certFile) || !existsSync(keyFile)) {
    const have = kind === 'client' ? clientNames(home) : []
    const choose = have.length > 0 ? ` (client certificates in this home: ${have.join(', ')})` : ''
    throw new MqError('E_CERT_NOT_FOUND', `No ${kind} certificate named ${JSON.stringify(name)} in ${home.issued}${choose}.`, {
      exit: kind === 'client' ? ExitCode.NOPERM : ExitCode.CONFIG,
      hint: kind === 'client' ? `Try this: --identity NAME for one of those, or mq cert issue ${name} --type client` : `Try this: mq cert issue ${name} --type server`,
    })
  }
  assertPrivateFile(keyFile)
  const m = {ca: readFileSync(home.caCert), cert: readFileSync(certFile), key: readFileSync(keyFile)}
  // parsed here so a damaged file is named (exit 65), not an OpenSSL error from inside the handshake
  parseCertPem(home.caCert, m.ca)
  parseCertPem(certFile, m.cert)
  parseKeyPem(keyFile, m.key)
  return m
}

/** Names in pki/issued with a client certificate and key, for "did you mean" hints. */
function clientNames(home: MqHome): string[] {
  if (!existsSync(home.issued)) return []
  return readdirSync(home.issued)
    .filter((f) => f.endsWith('.crt') && existsSync(join(home.issued, f.slice(0, -4) + '.key')))
    .filter((f) => {
      try {
        // node's keyUsage holds the extended key usage OIDs: clientAuth without serverAuth
        const eku = new X509Certificate(readFileSync(join(home.issued, f))).keyUsage ?? []
        return eku.includes('1.3.6.1.5.5.7.3.2') && !eku.includes('1.3.6.1.5.5.7.3.1')
      } catch {
        return false
      }
    })
    .map((f) => f.slice(0, -4))
    .sort()
}

/**
 * Mutual TLS for our servers: TLS 1.2+, client certificates required and checked against our CA
 * and its CRL (OpenSSL checks the CRL during the handshake).
 */
export function serverTlsOptions(home: MqHome, name: string): TlsOptions {
  const m = readMaterial(home, name, 'server')
  return {
    ...m,
    ...crlOption(home),
    minVersion: 'TLSv1.2',
    rejectUnauthorized: true,
    requestCert: true,
  }
}

/**
 * A client's side: its certificate, and trust in our CA only (not the system roots). With the
 * CRL, a revoked server certificate (a stolen broker or relay key) is refused in the handshake.
 */
export function clientTlsOptions(home: MqHome, identity: string): ConnectionOptions {
  clientLogger()?.debug('client identity', {ca: home.caCert, cert: home.issuedCert(identity), crl: existsSync(home.crl) ? home.crl : undefined, identity, key: home.issuedKey(identity)})
  const m = readMaterial(home, identity, 'client')
  return {...m, ...crlOption(home), minVersion: 'TLSv1.2', rejectUnauthorized: true}
}

/**
 * pki/crl.pem for a TLS context, loaded into a context of its own first so a damaged file is named
 * (exit 65) rather than failing inside the connection. OpenSSL's parser is the one the handshake
 * uses, and it spares every client call loading @peculiar/x509 just to read the CRL.
 */
function crlOption(home: MqHome): {crl?: Buffer} {
  if (!existsSync(home.crl)) return {}
  const crl = readFileSync(home.crl)
  try {
    createSecureContext({crl})
  } catch (error) {
    throw badPem(home.crl, crl, 'CRL', error)
  }
  return {crl}
}

function parseCrlPem(path: string, pem: Buffer): x509.X509Crl {
  try {
    return parseCrl(pem)
  } catch (error) {
    throw badPem(path, pem, 'CRL', error)
  }
}

/**
 * A connection's certificate never changes (renegotiation is refused): it is read once per
 * connection, not per request (getPeerCertificate builds a whole object; it was 5% of the broker's
 * CPU under proxy load). Revocation is still checked by the callers, per request, by serial.
 */
const identities = new WeakMap<TLSSocket, {cn: string; serial: string} | null>()

/** The verified peer's CN and serial, or null when the peer presented no valid certificate. */
export function peerIdentity(sock: TLSSocket): {cn: string; serial: string} | null {
  if (!sock.authorized) return null
  let who = identities.get(sock)
  if (who !== undefined) return who
  const cert = sock.getPeerCertificate()
  const cn = cert?.subject ? (Array.isArray(cert.subject.CN) ? cert.subject.CN[0] : cert.subject.CN) : undefined
  who = cn ? {cn, serial: normSerial(cert.serialNumber)} : null
  identities.set(sock, who)
  return who
}

/** Serials in pki/crl.pem after checking its signature against the CA; undefined if there is none. */
export function readCrlSync(home: MqHome): {pem: Buffer; serials: Set<string>} | undefined {
  if (!existsSync(home.crl)) return undefined
  const pem = readFileSync(home.crl)
  return {pem, serials: crlSerials(pem, new X509Certificate(readFileSync(home.caCert)), home.crl)}
}

/**
 * Orders the CRLs of one CA, newest highest: thisUpdate (whole seconds in X.509) first, then the
 * CRL number, so two CRLs issued within one second still compare.
 */
export function crlOrder(pem: Buffer): number {
  const crl = parseCrlPem('the CRL', pem)
  const ext = crl.extensions.find((e) => e.type === '2.5.29.20')
  let number = 0
  if (ext) {
    // DER INTEGER: tag, one length byte (CRL numbers are small), big-endian value
    const v = Buffer.from(ext.value)
    for (let i = 2; i < 2 + v[1] && i < v.length; i++) number = (number * 256 + v[i]) % 1_000_000
  }
  return Math.floor(crl.thisUpdate.getTime() / 1000) * 1_000_000 + number
}

/**
 * Takes a CRL from elsewhere (another cluster node): checked against our CA and written over
 * pki/crl.pem only when newer than ours. Returns whether it was written; the CrlWatcher then
 * reloads the servers as for a local revocation.
 */
export function adoptCrl(home: MqHome, pem: Buffer): boolean {
  crlSerials(pem, new X509Certificate(readFileSync(home.caCert)), 'the shared CRL')
  if (existsSync(home.crl) && crlOrder(readFileSync(home.crl)) >= crlOrder(pem)) return false
  writeFileAtomic(home.crl, pem, 0o644)
  return true
}

/** Serials of a PEM CRL signed by `ca`; anything else (garbage, another CA's CRL) is an MqError. */
export function crlSerials(pem: Buffer, ca: X509Certificate, label = 'the CRL'): Set<string> {
  let crl: x509.X509Crl
  try {
    crl = parseCrl(pem)
  } catch (error) {
    throw new MqError('E_CRL_CORRUPT', `${label} cannot be parsed: ${(error as Error).message}`, {exit: ExitCode.DATAERR, hint: 'Try this: mq cert crl (republishes it).'})
  }
  // signature check with node:crypto (synchronous): the CRL's tbs is signed by the CA key
  if (!verifyCrlSignature(crl, ca)) throw new MqError('E_CRL_UNTRUSTED', `${label} is not signed by our CA.`, {hint: 'Try this: mq cert crl'})
  return new Set(crl.entries.map((e) => normSerial(e.serialNumber)))
}

/** Reads one DER TLV header at `off`: returns where the value starts and ends. */
function derTlv(buf: Buffer, off: number): {start: number; end: number} {
  let len = buf[off + 1]
  let start = off + 2
  if (len & 0x80) {
    const n = len & 0x7f
    if (n === 0 || n > 4) throw new Error('unsupported DER length')
    len = buf.readUIntBE(off + 2, n)
    start += n
  }
  if (start + len > buf.length) throw new Error('truncated DER')
  return {end: start + len, start}
}

/** Whether the CA certificate in `caCertFile` signed this CRL (false when the file is unreadable). */
export function crlSignedBy(crl: x509.X509Crl, caCertFile: string): boolean {
  try {
    return verifyCrlSignature(crl, new X509Certificate(readFileSync(caCertFile)))
  } catch {
    return false
  }
}

function verifyCrlSignature(crl: x509.X509Crl, ca: X509Certificate): boolean {
  // Node's crypto verifies only certificates: check the CRL's tbsCertList signature directly.
  if (crl.signatureAlgorithm.hash?.name !== 'SHA-256' && crl.signatureAlgorithm.hash?.name !== 'SHA-384' && crl.signatureAlgorithm.hash?.name !== 'SHA-512') return false
  const der = Buffer.from(crl.rawData)
  const outer = derTlv(der, 0)
  const tbs = derTlv(der, outer.start)
  const v = createVerify(crl.signatureAlgorithm.hash.name.replace('-', '').toLowerCase())
  v.update(der.subarray(outer.start, tbs.end))
  return v.verify(ca.publicKey, Buffer.from(crl.signature))
}

/**
 * Watches pki/crl.pem and reports a new, valid CRL: servers reload their TLS context with it
 * (setSecureContext) and close live connections whose serial is now revoked.
 */
export class CrlWatcher extends EventEmitter {
  private timer?: NodeJS.Timeout
  private stamp = ''
  private pem?: Buffer
  private serials = new Set<string>()

  constructor(
    private readonly home: MqHome,
    private readonly intervalMs = 2000,
  ) {
    super()
    this.poll(false)
  }

  start(): void {
    if (this.timer) return
    this.timer = setInterval(() => this.poll(true), this.intervalMs)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }

  current(): Buffer | undefined {
    return this.pem
  }

  revoked(): Set<string> {
    return this.serials
  }

  /** Checks now (also called by the timer); emits 'change' when the file changed and verifies. */
  poll(emit = true): void {
    let stamp: string
    try {
      const st = statSync(this.home.crl)
      stamp = `${st.mtimeMs}:${st.size}:${st.ino}`
    } catch {
      return
    }
    if (stamp === this.stamp) return
    try {
      const crl = readCrlSync(this.home)
      if (!crl) return
      this.stamp = stamp
      this.pem = crl.pem
      this.serials = crl.serials
      if (emit) this.emit('change', crl.pem, crl.serials)
    } catch (error) {
      // a half-written or foreign CRL is ignored; the last good one stays in force
      this.emit('invalid', error)
    }
  }
}
