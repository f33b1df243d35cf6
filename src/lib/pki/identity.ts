import {X509Certificate, createHash, type KeyObject} from 'node:crypto'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'

import type {MqHome} from '../config/home.js'
import {ExitCode, MqError, PermissionError} from '../errors.js'
import {assertPrivateFile} from '../util/fs.js'
import {checkName} from '../util/names.js'
import {OU_OF, normSerial, subjectCN, subjectOU} from './certs.js'
import {IndexStore} from './index-store.js'
import {parseCertPem, parseKeyPem, readCertFile} from './pem.js'
import {readCrlSync} from './tls.js'

export interface E2eIdentity {
  name: string
  encCertPem: string
  signCertPem: string
  encPublicKey: KeyObject
  signPublicKey: KeyObject
  encPrivateKey?: KeyObject
  signPrivateKey?: KeyObject
  /** sha256 of the encryption key's SubjectPublicKeyInfo, hex in groups of 4 */
  fingerprint: string
}

export function identityFiles(home: MqHome, name: string) {
  return {
    encCert: join(home.keys, `${checkName(name)}.crt`),
    encKey: join(home.keys, `${name}.key`),
    encPub: join(home.keys, `${name}.pub`),
    signCert: join(home.keys, `${name}.sign.crt`),
    signKey: join(home.keys, `${name}.sign.key`),
  }
}

export function keyFingerprint(key: KeyObject): string {
  const hex = createHash('sha256').update(key.export({format: 'der', type: 'spki'})).digest('hex')
  return hex.match(/.{4}/g)!.join(':')
}

/** One of our own identities from $MQ_HOME/keys (with private keys when asked). */
export function loadIdentity(home: MqHome, name: string, opts: {withPrivate?: boolean} = {}): E2eIdentity {
  const f = identityFiles(home, name)
  if (!existsSync(f.encCert) || !existsSync(f.signCert)) {
    throw new MqError('E_IDENTITY_NOT_FOUND', `No end-to-end identity named ${JSON.stringify(name)} in ${home.keys}.`, {exit: ExitCode.NOPERM, hint: `Try this: mq keygen ${name}`})
  }
  const encCertPem = readFileSync(f.encCert, 'utf8')
  const signCertPem = readFileSync(f.signCert, 'utf8')
  const enc = parseCertPem(f.encCert, encCertPem)
  const sign = parseCertPem(f.signCert, signCertPem)
  const id: E2eIdentity = {encCertPem, encPublicKey: enc.publicKey, fingerprint: keyFingerprint(enc.publicKey), name, signCertPem, signPublicKey: sign.publicKey}
  if (opts.withPrivate) {
    for (const k of [f.encKey, f.signKey]) {
      if (!existsSync(k)) throw new MqError('E_IDENTITY_NO_PRIVATE_KEY', `${k} is missing: ${name} is not an identity you hold.`, {hint: `Try this: use an identity created here with mq keygen ${name}`})
      assertPrivateFile(k)
    }
    id.encPrivateKey = parseKeyPem(f.encKey, readFileSync(f.encKey))
    id.signPrivateKey = parseKeyPem(f.signKey, readFileSync(f.signKey))
  }
  return id
}

function checkOne(home: MqHome, ca: X509Certificate, revoked: Set<string>, name: string, pem: string, kind: 'e2e-enc' | 'e2e-sign'): X509Certificate {
  let cert: X509Certificate
  try {
    cert = new X509Certificate(pem)
  } catch {
    throw new PermissionError('E_IDENTITY_UNTRUSTED', `The ${kind} certificate offered for ${name} cannot be parsed.`, {hint: `Try this: ask ${name} to republish their keys.`})
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw new PermissionError('E_IDENTITY_UNTRUSTED', `The key offered for ${name} is not certified by our CA (${home.caCert}).`, {hint: 'Try this: make sure sender and recipient share the same CA; never trust a key the CA did not sign.'})
  }
  if (subjectCN(cert) !== name || subjectOU(cert) !== OU_OF[kind]) {
    throw new PermissionError('E_IDENTITY_UNTRUSTED', `The certificate offered for ${name} belongs to ${subjectCN(cert)} (${subjectOU(cert)}), not to ${name} (${OU_OF[kind]}).`, {hint: 'Try this: refetch the key; the directory may be serving the wrong one.'})
  }
  const now = Date.now()
  if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) {
    throw new PermissionError('E_IDENTITY_EXPIRED', `The key of ${name} expired on ${new Date(cert.validTo).toISOString()} (or is not yet valid).`, {hint: `Try this: ${name} runs mq keygen ${name} --force and republishes.`})
  }
  if (revoked.has(normSerial(cert.serialNumber))) {
    throw new PermissionError('E_IDENTITY_REVOKED', `The key of ${name} (serial ${normSerial(cert.serialNumber)}) has been revoked.`, {hint: `Try this: ask ${name} for a new key (mq keygen ${name} --force).`})
  }
  return cert
}

/**
 * Checks an identity's certificates against our CA, the CRL and the local index, so a key
 * directory (or a broker) cannot substitute its own key. Returns the verified public keys.
 */
export function verifyIdentityCerts(home: MqHome, name: string, encCertPem: string, signCertPem: string): E2eIdentity {
  if (!existsSync(home.caCert)) throw new PermissionError('E_CA_MISSING', `No CA certificate at ${home.caCert} to check ${name}'s key against.`, {hint: 'Try this: copy the CA certificate (pki/ca.crt) into place, or mq cert ca init.'})
  const ca = readCertFile(home.caCert)
  const revoked = new Set(readCrlSync(home)?.serials ?? [])
  // the local index knows revocations before a CRL copy reaches other machines
  try {
    for (const c of new IndexStore(home.pki).read().certs) if (c.revoked) revoked.add(normSerial(c.serial))
  } catch {}
  const enc = checkOne(home, ca, revoked, name, encCertPem, 'e2e-enc')
  const sign = checkOne(home, ca, revoked, name, signCertPem, 'e2e-sign')
  return {encCertPem, encPublicKey: enc.publicKey, fingerprint: keyFingerprint(enc.publicKey), name, signCertPem, signPublicKey: sign.publicKey}
}
