import type * as x509 from '@peculiar/x509'
import {X509Certificate, createHash, createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject, webcrypto} from 'node:crypto'
import {isIP} from 'node:net'
import type forge from 'node-forge'

import {DataError} from '../errors.js'
import type {CertType, RevocationReason} from './index-store.js'
import {forge as forgeLib, x509 as x509Lib} from './libs.js'

export interface KeyPair {
  publicPem: string
  privatePem: string
}

/** Native RSA key generation: forge's pure-JS generator takes seconds per key. */
export function generateRsa(bits: number): KeyPair {
  const {privateKey, publicKey} = generateKeyPairSync('rsa', {
    modulusLength: bits,
    privateKeyEncoding: {format: 'pem', type: 'pkcs8'},
    publicKeyEncoding: {format: 'pem', type: 'spki'},
  })
  return {privatePem: privateKey, publicPem: publicKey}
}

/** A positive serial of 128 random bits (RFC 5280 allows up to 20 octets; CAB forum wants >= 64 bits). */
export function randomSerial(): string {
  const b = randomBytes(16)
  b[0] = (b[0] & 0x7f) | 0x40
  return b.toString('hex')
}

/** Serials compare as lowercase hex without leading zeros (Node prints them upper-case). */
export function normSerial(s: string): string {
  return s.toLowerCase().replace(/^0+(?=.)/, '')
}

export function fingerprintOf(pem: string): string {
  return new X509Certificate(pem).fingerprint256.replaceAll(':', '').toLowerCase()
}


const DNS_RE = /^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/
export interface AltName {
  type: 2 | 7
  value?: string
  ip?: string
}
export function parseSans(sans: string[]): AltName[] {
  return sans.map((s) => {
    const m = /^(DNS|IP):(.+)$/i.exec(s.trim())
    if (!m) throw new DataError('E_BAD_SAN', `Invalid --san ${JSON.stringify(s)}: expected DNS:<host> or IP:<address>.`, {hint: 'Try this: --san DNS:broker.example.com --san IP:10.0.0.5'})
    const kind = m[1].toUpperCase()
    const value = m[2]
    if (kind === 'IP') {
      if (isIP(value) === 0) throw new DataError('E_BAD_SAN', `Invalid --san ${JSON.stringify(s)}: ${JSON.stringify(value)} is not an IPv4 or IPv6 address.`, {hint: 'Try this: --san IP:127.0.0.1'})
      return {ip: value, type: 7}
    }
    if (!DNS_RE.test(value) || value.length > 253) throw new DataError('E_BAD_SAN', `Invalid --san ${JSON.stringify(s)}: ${JSON.stringify(value)} is not a DNS name.`, {hint: 'Try this: --san DNS:localhost'})
    return {type: 2, value}
  })
}

export interface BuildCertOptions {
  cn: string
  ou?: string
  publicPem: string
  serial: string
  notBefore: Date
  notAfter: Date
  type: CertType | 'ca'
  sans?: AltName[]
  /** absent: self-signed (the CA) */
  issuer?: {certPem: string; keyPem: string}
  /** for the self-signed CA */
  selfKeyPem?: string
}

const OU: Record<CertType | 'ca', string> = {
  ca: 'mq certificate authority',
  client: 'mq client',
  'e2e-enc': 'mq e2e encryption',
  'e2e-sign': 'mq e2e signing',
  server: 'mq server',
}
export const OU_OF = OU

/** Builds and signs an X.509 v3 certificate with SHA-256 (forge defaults to SHA-1, never used here). */
export function buildCert(o: BuildCertOptions): string {
  const {md, pki} = forgeLib()
  const cert = pki.createCertificate()
  cert.publicKey = pki.publicKeyFromPem(o.publicPem)
  cert.serialNumber = o.serial
  cert.validity.notBefore = o.notBefore
  cert.validity.notAfter = o.notAfter
  const subject = [
    {name: 'commonName', value: o.cn},
    {name: 'organizationName', value: 'mq'},
    {shortName: 'OU', value: o.ou ?? OU[o.type]},
  ]
  cert.setSubject(subject)
  const exts: object[] = [{name: 'subjectKeyIdentifier'}]
  let signKey: forge.pki.rsa.PrivateKey
  if (o.issuer) {
    const ca = pki.certificateFromPem(o.issuer.certPem)
    cert.setIssuer(ca.subject.attributes)
    exts.push({keyIdentifier: ca.generateSubjectKeyIdentifier().getBytes(), name: 'authorityKeyIdentifier'})
    signKey = pki.privateKeyFromPem(o.issuer.keyPem) as forge.pki.rsa.PrivateKey
  } else {
    cert.setIssuer(subject)
    exts.push({keyIdentifier: cert.generateSubjectKeyIdentifier().getBytes(), name: 'authorityKeyIdentifier'})
    signKey = pki.privateKeyFromPem(o.selfKeyPem!) as forge.pki.rsa.PrivateKey
  }
  switch (o.type) {
    case 'ca':
      exts.push({cA: true, critical: true, name: 'basicConstraints'}, {cRLSign: true, critical: true, keyCertSign: true, name: 'keyUsage'})
      break
    case 'server':
      exts.push({cA: false, critical: true, name: 'basicConstraints'}, {critical: true, digitalSignature: true, keyEncipherment: true, name: 'keyUsage'}, {name: 'extKeyUsage', serverAuth: true})
      exts.push({altNames: o.sans ?? [], name: 'subjectAltName'})
      break
    case 'client':
      exts.push({cA: false, critical: true, name: 'basicConstraints'}, {critical: true, digitalSignature: true, keyEncipherment: true, name: 'keyUsage'}, {clientAuth: true, name: 'extKeyUsage'})
      break
    case 'e2e-enc':
      exts.push({cA: false, critical: true, name: 'basicConstraints'}, {critical: true, dataEncipherment: true, keyEncipherment: true, name: 'keyUsage'}, {emailProtection: true, name: 'extKeyUsage'})
      break
    case 'e2e-sign':
      exts.push({cA: false, critical: true, name: 'basicConstraints'}, {critical: true, digitalSignature: true, name: 'keyUsage', nonRepudiation: true}, {emailProtection: true, name: 'extKeyUsage'})
      break
  }
  cert.setExtensions(exts)
  cert.sign(signKey, md.sha256.create())
  return pki.certificateToPem(cert)
}

/** PKCS#1 PEM of a (possibly passphrase-protected) private key, for forge. */
export function toPlainPem(key: KeyObject): string {
  return key.export({format: 'pem', type: 'pkcs1'}) as string
}

export function loadPrivateKey(pem: string, passphrase?: string): KeyObject {
  return createPrivateKey(passphrase === undefined ? pem : {key: pem, passphrase})
}

const REASON_NAME: Record<RevocationReason, keyof typeof x509.X509CrlReason> = {
  'affiliation-changed': 'affiliationChanged',
  'ca-compromise': 'cACompromise',
  'cessation-of-operation': 'cessationOfOperation',
  'key-compromise': 'keyCompromise',
  superseded: 'superseded',
  unspecified: 'unspecified',
}

function derInteger(n: number): Uint8Array {
  let hex = n.toString(16)
  if (hex.length % 2) hex = '0' + hex
  let bytes = Buffer.from(hex, 'hex')
  if (bytes[0] & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes])
  return new Uint8Array(Buffer.concat([Buffer.from([0x02, bytes.length]), bytes]))
}

export interface CrlEntryInput {
  serial: string
  revokedAt: Date
  reason?: RevocationReason
}

/** A v2 CRL signed with SHA-256, with CRL number and authority key identifier. PEM label X509 CRL (Node rejects "CRL"). */
export async function buildCrl(o: {caCertPem: string; caKey: KeyObject; number: number; thisUpdate: Date; nextUpdate: Date; entries: CrlEntryInput[]}): Promise<string> {
  const x509 = x509Lib()
  const ca = new x509.X509Certificate(o.caCertPem)
  const signingKey = await webcrypto.subtle.importKey('pkcs8', o.caKey.export({format: 'der', type: 'pkcs8'}), {hash: 'SHA-256', name: 'RSASSA-PKCS1-v1_5'}, false, ['sign'])
  const ski = ca.getExtension(x509.SubjectKeyIdentifierExtension)
  const extensions: x509.Extension[] = [new x509.Extension('2.5.29.20', false, derInteger(o.number))]
  if (ski) extensions.push(new x509.AuthorityKeyIdentifierExtension(ski.keyId))
  const crl = await x509.X509CrlGenerator.create({
    entries: o.entries.map((e) => ({reason: e.reason ? x509.X509CrlReason[REASON_NAME[e.reason]] : undefined, revocationDate: e.revokedAt, serialNumber: e.serial})),
    extensions,
    issuer: ca.subjectName,
    nextUpdate: o.nextUpdate,
    signingAlgorithm: {hash: 'SHA-256', name: 'RSASSA-PKCS1-v1_5'},
    signingKey: signingKey as unknown as x509.X509CrlCreateParams["signingKey"],
    thisUpdate: o.thisUpdate,
  })
  return crl.toString('pem').replace(/-----(BEGIN|END) CRL-----/g, '-----$1 X509 CRL-----') + '\n'
}

/**
 * Parses a PEM CRL. We write the header OpenSSL writes ("X509 CRL"); @peculiar/x509 reads only
 * "CRL", so every reader goes through here. Throws on anything that is not a CRL.
 */
export function parseCrl(pem: string | Buffer): x509.X509Crl {
  return new (x509Lib().X509Crl)(pem.toString().replace(/X509 CRL/g, 'CRL'))
}

/** Serials listed in a CRL, after checking its signature against the CA. Throws DataError if it is not ours. */
export async function readCrl(crlPem: string, caCertPem: string): Promise<{serials: Set<string>; nextUpdate?: Date; thisUpdate: Date}> {
  let crl: x509.X509Crl
  try {
    crl = parseCrl(crlPem)
  } catch (error) {
    throw new DataError('E_CRL_CORRUPT', `The CRL cannot be parsed: ${(error as Error).message}`, {hint: 'Try this: mq cert crl (republishes it).'})
  }
  const ca = new (x509Lib().X509Certificate)(caCertPem)
  const ok = await crl.verify({publicKey: await ca.publicKey.export()})
  if (!ok) throw new DataError('E_CRL_UNTRUSTED', 'The CRL is not signed by our CA.', {hint: 'Try this: mq cert crl (republishes it).'})
  return {nextUpdate: crl.nextUpdate, serials: new Set(crl.entries.map((e) => normSerial(e.serialNumber))), thisUpdate: crl.thisUpdate}
}

export function subjectCN(cert: X509Certificate): string | undefined {
  for (const line of cert.subject.split('\n')) if (line.startsWith('CN=')) return line.slice(3)
  return undefined
}

export function subjectOU(cert: X509Certificate): string | undefined {
  for (const line of cert.subject.split('\n')) if (line.startsWith('OU=')) return line.slice(3)
  return undefined
}
