import {X509Certificate, createPrivateKey, createPublicKey, type KeyObject} from 'node:crypto'
import {existsSync, readFileSync, rmSync} from 'node:fs'

import type * as x509 from '@peculiar/x509'

import type {MqConfig} from '../config/schema.js'
import type {MqHome} from '../config/home.js'
import type {Logger} from '../log.js'
import {ConfigError, DataError, MqError, NotFoundError, PermissionError, UsageError} from '../errors.js'
import {checkName} from '../util/names.js'
import {assertPrivateFile, ensureDir, ensurePrivateDir, writeFileAtomic, writeSecretFile} from '../util/fs.js'
import {buildCert, buildCrl, fingerprintOf, generateRsa, loadPrivateKey, normSerial, parseSans, randomSerial, toPlainPem} from './certs.js'
import {type CertType, type IndexEntry, IndexStore, REVOCATION_REASONS, type RevocationReason} from './index-store.js'
import {type E2eIdentity, identityFiles, loadIdentity} from './identity.js'
import {encryptPrivateKey} from './key-encryption.js'
import {x509 as x509Lib} from './libs.js'
import {badPem} from './pem.js'

export interface CertRecord {
  name: string
  serial: string
  type: CertType | 'ca'
  subject: string
  notBefore: string
  notAfter: string
  status: 'active' | 'revoked' | 'expired'
  revokedAt?: string
  reason?: RevocationReason
  fingerprint: string
  certPath: string
  keyPath?: string
}

export interface IssueOptions {
  type: 'server' | 'client'
  sans?: string[]
  days?: number
  force?: boolean
  /** hand the private key back (keyPem) instead of keeping it under pki/issued: it is shown once */
  returnKey?: boolean
  /**
   * An active, unexpired certificate of NAME and this type whose files exist is returned as it is
   * (decided under the index lock, so concurrent first starts issue once and never revoke each other).
   */
  reuse?: boolean
  /** for tests and migrations: explicit validity */
  notBefore?: Date
  notAfter?: Date
}

const DAY = 86_400_000
// Issued certificates start a minute in the past so a peer with a slightly slow clock accepts them.
const SKEW_MS = 60_000

function toRecord(e: IndexEntry, now = Date.now()): CertRecord {
  const status = e.revoked ? 'revoked' : Date.parse(e.notAfter) < now ? 'expired' : 'active'
  const {revoked: _r, ...rest} = e
  return {...rest, status}
}

function checkDays(days: number | undefined, what: string): void {
  if (days !== undefined && (!Number.isInteger(days) || days < 1 || days > 36_500)) {
    throw new UsageError('E_BAD_DAYS', `${what} must be a whole number of days from 1 to 36500, got ${days}.`, {hint: 'Try this: --days 365'})
  }
}

/**
 * The built-in certificate authority: one CA per $MQ_HOME, issuing server and client TLS
 * certificates and certifying end-to-end identity keys, with revocation published as a CRL
 * that every mq server enforces.
 */
export class CertificateAuthority {
  private readonly index: IndexStore

  private constructor(
    readonly home: MqHome,
    private readonly cfg: MqConfig['pki'],
    private readonly passphrase?: string,
  ) {
    this.index = new IndexStore(home.pki)
  }

  static open(home: MqHome, cfg: MqConfig['pki'], opts: {passphrase?: string} = {}): CertificateAuthority {
    return new CertificateAuthority(home, cfg, opts.passphrase ?? process.env.MQ_CA_PASSPHRASE)
  }

  exists(): boolean {
    return existsSync(this.home.caCert) && existsSync(this.home.caKey)
  }

  async init(opts: {cn?: string; days?: number; force?: boolean} = {}): Promise<CertRecord> {
    checkDays(opts.days, '--days')
    ensureDir(this.home.root, 0o700)
    ensurePrivateDir(this.home.pki)
    return this.index.withLock(async () => {
      if (this.exists() && !opts.force) {
        throw new MqError('E_CA_EXISTS', `A certificate authority already exists in ${this.home.pki}.`, {hint: 'Try this: keep it, or pass --force to replace it (every certificate it issued stops being trusted).'})
      }
      const kp = generateRsa(this.cfg.ca_key_bits)
      const now = Date.now()
      const serial = randomSerial()
      const certPem = buildCert({
        cn: opts.cn ?? this.cfg.ca_cn,
        notAfter: new Date(now + (opts.days ?? this.cfg.ca_days) * DAY),
        notBefore: new Date(now - SKEW_MS),
        publicPem: kp.publicPem,
        selfKeyPem: kp.privatePem,
        serial,
        type: 'ca',
      })
      // scrypt, not Node's export({cipher}) (PBKDF2 at 2,048 iterations): see key-encryption.ts
      const keyPem = this.passphrase ? encryptPrivateKey(createPrivateKey(kp.privatePem), this.passphrase) : kp.privatePem
      if (opts.force) {
        // a new CA invalidates everything the old one issued
        rmSync(this.home.issued, {force: true, recursive: true})
        rmSync(this.index.file, {force: true})
      }
      writeSecretFile(this.home.caKey, keyPem)
      writeFileAtomic(this.home.caCert, certPem, 0o644)
      const index = {certs: [], crlNumber: 0, version: 1 as const}
      this.index.write(index)
      await this.writeCrlLocked()
      const x = new X509Certificate(certPem)
      return {
        certPath: this.home.caCert,
        fingerprint: fingerprintOf(certPem),
        keyPath: this.home.caKey,
        name: 'ca',
        notAfter: new Date(x.validTo).toISOString(),
        notBefore: new Date(x.validFrom).toISOString(),
        serial,
        status: 'active',
        subject: x.subject.replaceAll('\n', ', '),
        type: 'ca',
      }
    })
  }

  /** The CA certificate and its private key; errors say how to create or unlock them. */
  private loadCa(): {certPem: string; key: KeyObject} {
    if (!this.exists()) {
      throw new PermissionError('E_CA_MISSING', `No certificate authority in ${this.home.pki}.`, {hint: 'Try this: mq cert ca init'})
    }
    const certPem = readFileSync(this.home.caCert, 'utf8')
    try {
      new X509Certificate(certPem)
    } catch (error) {
      throw new DataError('E_CA_CORRUPT', `${this.home.caCert} is not a valid certificate: ${(error as Error).message}`, {hint: 'Try this: restore pki/ca.crt from a backup, or mq cert ca init --force to start over.'})
    }
    assertPrivateFile(this.home.caKey)
    const keyPem = readFileSync(this.home.caKey, 'utf8')
    const encrypted = keyPem.includes('ENCRYPTED')
    if (encrypted && !this.passphrase) {
      throw new PermissionError('E_CA_LOCKED', `${this.home.caKey} is protected by a passphrase.`, {hint: 'Try this: --passphrase-file FILE or export MQ_CA_PASSPHRASE.'})
    }
    let key: KeyObject
    try {
      key = loadPrivateKey(keyPem, encrypted ? this.passphrase : undefined)
    } catch (error) {
      if (encrypted) throw new PermissionError('E_CA_PASSPHRASE', `Wrong passphrase for ${this.home.caKey}.`, {hint: 'Try this: check --passphrase-file or MQ_CA_PASSPHRASE.'})
      throw new DataError('E_CA_CORRUPT', `${this.home.caKey} is not a valid private key: ${(error as Error).message}`, {hint: 'Try this: restore pki/ca.key from a backup.'})
    }
    const pub = createPublicKey(key).export({format: 'der', type: 'spki'})
    const certPub = new X509Certificate(certPem).publicKey.export({format: 'der', type: 'spki'})
    if (!pub.equals(certPub)) {
      throw new DataError('E_CA_CORRUPT', `${this.home.caKey} does not match ${this.home.caCert}.`, {hint: 'Try this: restore the matching pair from a backup.'})
    }
    return {certPem, key}
  }

  private signLeaf(name: string, type: CertType, publicPem: string, opts: {days?: number; sans?: string[]; notBefore?: Date; notAfter?: Date}): {certPem: string; entry: Omit<IndexEntry, 'certPath' | 'keyPath'>} {
    const ca = this.loadCa()
    const now = Date.now()
    const serial = randomSerial()
    const notBefore = opts.notBefore ?? new Date(now - SKEW_MS)
    const notAfter = opts.notAfter ?? new Date(now + (opts.days ?? this.cfg.cert_days) * DAY)
    const sans = type === 'server' ? parseSans(opts.sans && opts.sans.length > 0 ? opts.sans : ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1']) : undefined
    const certPem = buildCert({cn: name, issuer: {certPem: ca.certPem, keyPem: toPlainPem(ca.key)}, notAfter, notBefore, publicPem, sans, serial, type})
    const x = new X509Certificate(certPem)
    return {
      certPem,
      entry: {fingerprint: fingerprintOf(certPem), name, notAfter: new Date(x.validTo).toISOString(), notBefore: new Date(x.validFrom).toISOString(), revoked: false, serial, subject: x.subject.replaceAll('\n', ', '), type},
    }
  }

  async issue(name: string, opts: IssueOptions): Promise<CertRecord & {keyPem?: string; reused?: boolean}> {
    checkName(name)
    checkDays(opts.days, '--days')
    if (opts.type !== 'server' && opts.type !== 'client') throw new UsageError('E_BAD_TYPE', `--type must be server or client, got ${JSON.stringify(opts.type)}.`, {hint: 'Try this: --type client'})
    if (opts.type === 'client' && opts.sans && opts.sans.length > 0) throw new UsageError('E_BAD_SAN', '--san applies to server certificates only.', {hint: 'Try this: drop --san, or use --type server.'})
    if (opts.sans) parseSans(opts.sans) // validate before touching anything
    this.loadCa()
    return this.index.withLock(async () => {
      const index = this.index.read()
      const current = index.certs.filter((c) => c.name === name && (c.type === 'server' || c.type === 'client') && !c.revoked)
      if (opts.reuse) {
        const valid = current.find((c) => c.type === opts.type && Date.parse(c.notAfter) > Date.now() && existsSync(c.certPath) && (c.keyPath === undefined || existsSync(c.keyPath)))
        if (valid) return {...toRecord(valid), reused: true}
      }
      if (current.length > 0 && !opts.force) {
        throw new MqError('E_CERT_EXISTS', `A certificate named ${name} already exists (serial ${current[0].serial}).`, {hint: `Try this: mq cert issue ${name} --type ${opts.type} --force (re-issues it and revokes the old one as superseded).`})
      }
      const kp = generateRsa(this.cfg.key_bits)
      const {certPem, entry} = this.signLeaf(name, opts.type, kp.publicPem, opts)
      ensureDir(this.home.issued, 0o755)
      if (opts.returnKey) rmSync(this.home.issuedKey(name), {force: true})
      else writeSecretFile(this.home.issuedKey(name), kp.privatePem)
      writeFileAtomic(this.home.issuedCert(name), certPem, 0o644)
      const now = new Date().toISOString()
      for (const c of current) Object.assign(c, {reason: 'superseded', revoked: true, revokedAt: now})
      const full: IndexEntry = {...entry, certPath: this.home.issuedCert(name), ...(opts.returnKey ? {} : {keyPath: this.home.issuedKey(name)})}
      index.certs.push(full)
      this.index.write(index)
      if (current.length > 0) await this.writeCrlLocked()
      return opts.returnKey ? {...toRecord(full), keyPem: kp.privatePem} : toRecord(full)
    })
  }

  /**
   * A new certificate for the same name, type (key usage), public key and SANs, with a new validity.
   * The new certificate and its index entry are written first; only then is the old one revoked as
   * superseded and the CRL republished, all under the index lock: a crash in between leaves two valid
   * certificates, never none. The key stays where it is (a key that never left its host stays there).
   */
  async renew(name: string, opts: {days?: number; type?: 'server' | 'client'; sans?: string[]} = {}): Promise<{renewed: CertRecord; superseded: CertRecord}> {
    checkName(name)
    checkDays(opts.days, '--days')
    if (opts.sans) parseSans(opts.sans)
    this.loadCa()
    return this.index.withLock(async () => {
      const index = this.index.read()
      const current = index.certs.filter((c) => c.name === name && (c.type === 'server' || c.type === 'client') && !c.revoked && (opts.type === undefined || c.type === opts.type))
      if (current.length === 0) {
        const e2e = index.certs.some((c) => c.name === name && !c.revoked && (c.type === 'e2e-enc' || c.type === 'e2e-sign'))
        throw new NotFoundError('E_NOT_FOUND', `No active ${opts.type ?? 'server or client'} certificate named ${JSON.stringify(name)} to renew.`, {
          hint: e2e ? `Try this: mq keygen ${name} --force (end-to-end identities are replaced, not renewed)` : `Try this: mq cert list, or mq cert issue ${name} --type client`,
        })
      }
      if (current.length > 1 && new Set(current.map((c) => c.type)).size > 1) {
        throw new UsageError('E_AMBIGUOUS', `${name} has both a server and a client certificate.`, {hint: `Try this: mq cert renew ${name} --type server (or --type client)`})
      }
      const old = current.sort((a, b) => b.notBefore.localeCompare(a.notBefore))[0] as IndexEntry & {type: 'server' | 'client'}
      let oldCert: X509Certificate
      try {
        oldCert = new X509Certificate(readFileSync(old.certPath))
      } catch (error) {
        throw new DataError('E_BAD_PEM', `${old.certPath} (the certificate to renew) cannot be read: ${(error as Error).message}.`, {hint: `Try this: restore it from a backup, or issue a new one: mq cert issue ${name} --type ${old.type} --force`})
      }
      const publicPem = oldCert.publicKey.export({format: 'pem', type: 'spki'}).toString()
      const sans = opts.sans ?? (old.type === 'server' ? sansOf(oldCert) : undefined)
      const {certPem, entry} = this.signLeaf(name, old.type, publicPem, {days: opts.days, sans})
      writeFileAtomic(old.certPath, certPem, 0o644)
      const full: IndexEntry = {...entry, certPath: old.certPath, ...(old.keyPath ? {keyPath: old.keyPath} : {})}
      index.certs.push(full)
      this.index.write(index)
      // the new certificate is on disk and in the index: now the old one may go
      Object.assign(old, {reason: 'superseded', revoked: true, revokedAt: new Date().toISOString()})
      this.index.write(index)
      await this.writeCrlLocked()
      return {renewed: toRecord(full), superseded: toRecord(old)}
    })
  }

  /**
   * Issues a certificate for the key of a PKCS#10 request (PEM) whose private key stays on its host.
   * The request's signature must verify (it proves the requester holds the key); a request for a CA
   * (basicConstraints CA:true) is refused; the name is --name or the request's CN; server SANs are
   * --san, else the request's, else the defaults. What is issued is ours: a server or client leaf.
   */
  async signRequest(csrPem: string, csrPath: string, opts: {name?: string; type: 'server' | 'client'; sans?: string[]; days?: number; force?: boolean}): Promise<CertRecord & {certPem: string}> {
    checkDays(opts.days, '--days')
    const req = await parseRequest(csrPem, csrPath)
    const name = opts.name ?? req.cn
    if (!name) throw new UsageError('E_CSR_NO_NAME', `${csrPath} has no subject CN: the certificate needs a name.`, {hint: 'Try this: --name NAME'})
    checkName(name)
    if (opts.type === 'client' && opts.sans && opts.sans.length > 0) throw new UsageError('E_BAD_SAN', '--san applies to server certificates only.', {hint: 'Try this: drop --san, or use --type server.'})
    const sans = opts.type === 'server' ? (opts.sans && opts.sans.length > 0 ? opts.sans : req.sans.length > 0 ? req.sans : undefined) : undefined
    if (sans) parseSans(sans)
    this.loadCa()
    return this.index.withLock(async () => {
      const index = this.index.read()
      const current = index.certs.filter((c) => c.name === name && (c.type === 'server' || c.type === 'client') && !c.revoked)
      if (current.length > 0 && !opts.force) {
        throw new MqError('E_CERT_EXISTS', `A certificate named ${name} already exists (serial ${current[0].serial}).`, {hint: `Try this: --force (issues it and revokes the old one as superseded), or mq cert renew ${name}`})
      }
      const {certPem, entry} = this.signLeaf(name, opts.type, req.publicPem, {days: opts.days, sans})
      ensureDir(this.home.issued, 0o755)
      writeFileAtomic(this.home.issuedCert(name), certPem, 0o644)
      // a key kept here for an older certificate of this name does not belong to the new one
      const staleKey = current.some((c) => c.keyPath !== undefined) || existsSync(this.home.issuedKey(name))
      if (staleKey) rmSync(this.home.issuedKey(name), {force: true})
      const full: IndexEntry = {...entry, certPath: this.home.issuedCert(name)}
      index.certs.push(full)
      this.index.write(index)
      if (current.length > 0) {
        const now = new Date().toISOString()
        for (const c of current) Object.assign(c, {reason: 'superseded', revoked: true, revokedAt: now})
        this.index.write(index)
        await this.writeCrlLocked()
      }
      return {...toRecord(full), certPem}
    })
  }

  /** Revokes every active certificate of NAME (TLS and end-to-end), or the one with SERIAL; republishes the CRL. */
  async revoke(nameOrSerial: string, reason: RevocationReason = 'unspecified'): Promise<CertRecord[]> {
    if (!REVOCATION_REASONS.includes(reason)) {
      throw new UsageError('E_BAD_REASON', `Unknown revocation reason ${JSON.stringify(reason)}.`, {hint: `Try this: --reason ${REVOCATION_REASONS.join('|')}`})
    }
    this.loadCa()
    return this.index.withLock(async () => {
      const index = this.index.read()
      const bySerial = /^[0-9a-fA-F]{8,}$/.test(nameOrSerial) ? index.certs.filter((c) => normSerial(c.serial) === normSerial(nameOrSerial)) : []
      const matches = bySerial.length > 0 ? bySerial : index.certs.filter((c) => c.name === nameOrSerial)
      if (matches.length === 0) {
        throw new NotFoundError('E_NOT_FOUND', `No certificate with name or serial ${JSON.stringify(nameOrSerial)}.`, {hint: 'Try this: mq cert list'})
      }
      const active = matches.filter((c) => !c.revoked)
      if (active.length === 0) {
        throw new MqError('E_CERT_ALREADY_REVOKED', `${nameOrSerial} is already revoked.`, {hint: 'Try this: mq cert list to see its status.'})
      }
      const now = new Date().toISOString()
      for (const c of active) Object.assign(c, {reason, revoked: true, revokedAt: now})
      this.index.write(index)
      await this.writeCrlLocked()
      return active.map((c) => toRecord(c))
    })
  }

  /**
   * Servers call this at start: without pki/crl.pem they would admit every certificate this CA
   * revoked (pki/index.json still lists them). With the CA key at hand the CRL is rebuilt from the
   * index; without it, a home whose index lists revocations refuses to start (E_CRL_MISSING).
   */
  async ensureCrl(): Promise<{rebuilt: false} | {rebuilt: true; revoked: number}> {
    if (existsSync(this.home.crl)) return {rebuilt: false}
    const indexFile = this.index.file
    if (this.exists()) {
      try {
        const r = await this.publishCrl()
        return {rebuilt: true, revoked: r.revoked}
      } catch (error) {
        throw new ConfigError('E_CRL_MISSING', `${this.home.crl} is missing and could not be rebuilt from ${indexFile}: ${(error as Error).message}`, {
          hint: 'Try this: mq cert crl (with MQ_CA_PASSPHRASE set when the CA key is encrypted), then start again.',
        })
      }
    }
    const revoked = existsSync(indexFile) ? this.index.read().certs.filter((c) => c.revoked).length : 0
    if (revoked > 0) {
      throw new ConfigError('E_CRL_MISSING', `${this.home.crl} is missing: ${indexFile} lists ${revoked} revoked certificate(s) that would be admitted, and there is no CA key here to rebuild the CRL.`, {
        hint: 'Try this: copy the current crl.pem from the CA host into pki/ (or run mq cert crl there).',
      })
    }
    return {rebuilt: false}
  }

  async publishCrl(days?: number): Promise<{path: string; number: number; revoked: number; nextUpdate: string}> {
    checkDays(days, '--days')
    this.loadCa()
    return this.index.withLock(() => this.writeCrlLocked(days))
  }

  private async writeCrlLocked(days?: number): Promise<{path: string; number: number; revoked: number; nextUpdate: string}> {
    const ca = this.loadCa()
    const index = this.index.read()
    index.crlNumber += 1
    const revoked = index.certs.filter((c) => c.revoked)
    const now = new Date()
    const nextUpdate = new Date(now.getTime() + (days ?? this.cfg.crl_days) * DAY)
    const pem = await buildCrl({
      caCertPem: ca.certPem,
      caKey: ca.key,
      entries: revoked.map((c) => ({reason: c.reason, revokedAt: new Date(c.revokedAt!), serial: c.serial})),
      nextUpdate,
      number: index.crlNumber,
      thisUpdate: now,
    })
    writeFileAtomic(this.home.crl, pem, 0o644)
    this.index.write(index)
    return {nextUpdate: nextUpdate.toISOString(), number: index.crlNumber, path: this.home.crl, revoked: revoked.length}
  }

  list(): CertRecord[] {
    if (!existsSync(this.home.pki)) return []
    const now = Date.now()
    return this.index.read().certs.map((c) => toRecord(c, now))
  }

  /** The active certificate of NAME (else its newest); TLS certificates before end-to-end ones. */
  get(name: string): CertRecord {
    const all = this.list().filter((c) => c.name === name)
    const rank = (c: CertRecord) => (c.status === 'active' ? 0 : 1) + (c.type === 'server' || c.type === 'client' ? 0 : 2)
    const best = all.sort((a, b) => rank(a) - rank(b) || b.notBefore.localeCompare(a.notBefore))[0]
    if (!best) throw new NotFoundError('E_NOT_FOUND', `No certificate named ${JSON.stringify(name)}.`, {hint: 'Try this: mq cert list'})
    return best
  }

  /** Dev bootstrap: a CA and any missing certificates. Returns what it created ("ca", names). */
  async ensureDevelopment(opts: {servers?: string[]; clients?: string[]; e2e?: string[]}): Promise<string[]> {
    const created: string[] = []
    // a CA certificate without its key here is a CA kept elsewhere: never replace it with a new one
    if (!existsSync(this.home.caCert)) {
      try {
        await this.init()
        created.push('ca')
      } catch (error) {
        // another process created it first (concurrent first starts): use theirs
        if (!(error instanceof MqError && error.code === 'E_CA_EXISTS')) throw error
      }
    }
    // decided under the index lock: a valid certificate another process just issued is reused, not replaced
    // (what is already there needs no CA key: a passphrase-protected CA is not unlocked for nothing)
    const have = new Set(this.list().filter((c) => c.status === 'active' && existsSync(c.certPath) && (c.keyPath === undefined || existsSync(c.keyPath))).map((c) => `${c.type}:${c.name}`))
    const wanted = [...(opts.servers ?? []).map((name) => ({name, type: 'server' as const})), ...(opts.clients ?? []).map((name) => ({name, type: 'client' as const}))]
    for (const {name, type} of wanted.filter((w) => !have.has(`${w.type}:${w.name}`))) {
      const r = await this.issue(name, {force: true, reuse: true, type})
      if (!r.reused) created.push(name)
    }
    // end-to-end identities, so the first `mq send --to bob` works without --from; one that exists (keys or
    // certificates, made by another process meanwhile) is kept
    for (const name of opts.e2e ?? []) {
      if (have.has(`e2e-enc:${name}`) || existsSync(identityFiles(this.home, name).encKey)) continue
      try {
        await this.keygen(name)
        created.push(`e2e:${name}`)
      } catch (error) {
        if (!(error instanceof MqError && error.code === 'E_KEY_EXISTS')) throw error
      }
    }
    return created
  }

  /** An end-to-end identity: RSA-OAEP decryption key and RSA-PSS signing key, each certified by the CA. */
  async keygen(name: string, opts: {force?: boolean} = {}): Promise<E2eIdentity> {
    checkName(name)
    this.loadCa()
    return this.index.withLock(async () => {
      const files = identityFiles(this.home, name)
      const index = this.index.read()
      const current = index.certs.filter((c) => c.name === name && (c.type === 'e2e-enc' || c.type === 'e2e-sign') && !c.revoked)
      if ((current.length > 0 || existsSync(files.encKey)) && !opts.force) {
        throw new MqError('E_KEY_EXISTS', `An end-to-end identity named ${name} already exists in ${this.home.keys}.`, {hint: `Try this: mq keygen ${name} --force (replaces it; messages encrypted to the old key become unreadable).`})
      }
      const enc = generateRsa(Math.max(this.cfg.key_bits, 2048))
      const sign = generateRsa(Math.max(this.cfg.key_bits, 2048))
      const e = this.signLeaf(name, 'e2e-enc', enc.publicPem, {})
      const s = this.signLeaf(name, 'e2e-sign', sign.publicPem, {})
      ensurePrivateDir(this.home.keys)
      writeSecretFile(files.encKey, enc.privatePem)
      writeSecretFile(files.signKey, sign.privatePem)
      writeFileAtomic(files.encPub, enc.publicPem, 0o644)
      writeFileAtomic(files.encCert, e.certPem, 0o644)
      writeFileAtomic(files.signCert, s.certPem, 0o644)
      const now = new Date().toISOString()
      for (const c of current) Object.assign(c, {reason: 'superseded', revoked: true, revokedAt: now})
      index.certs.push({...e.entry, certPath: files.encCert, keyPath: files.encKey}, {...s.entry, certPath: files.signCert, keyPath: files.signKey})
      this.index.write(index)
      if (current.length > 0) await this.writeCrlLocked()
      return loadIdentity(this.home, name, {withPrivate: true})
    })
  }
}

/** A server certificate's SANs as --san values (DNS:x, IP:y). */
function sansOf(cert: X509Certificate): string[] {
  const out: string[] = []
  for (const part of (cert.subjectAltName ?? '').split(', ')) {
    const m = /^(DNS|IP Address):(.+)$/.exec(part.trim())
    if (m) out.push(`${m[1] === 'DNS' ? 'DNS' : 'IP'}:${m[2]}`)
  }
  return out
}

const OID_BASIC_CONSTRAINTS = '2.5.29.19'
const OID_SAN = '2.5.29.17'

/** Parses and checks a certificate request: PEM, signature, no CA, an RSA key of 2048 bits or more. */
async function parseRequest(pem: string, path: string): Promise<{cn?: string; sans: string[]; publicPem: string}> {
  let req: x509.Pkcs10CertificateRequest
  try {
    if (!/-----BEGIN (NEW )?CERTIFICATE REQUEST-----/.test(pem)) throw new Error('no CERTIFICATE REQUEST block')
    req = new (x509Lib().Pkcs10CertificateRequest)(pem.replace(/NEW CERTIFICATE REQUEST/g, 'CERTIFICATE REQUEST'))
  } catch (error) {
    throw new DataError('E_BAD_PEM', badPem(path, pem, 'certificate request', error).message, {hint: 'Try this: give the PEM request file (openssl req -new -key KEY -out REQ.csr writes one)'})
  }
  let valid = false
  try {
    valid = await req.verify()
  } catch {}
  if (!valid) throw new DataError('E_CSR_SIGNATURE', `${path}: the request's signature does not verify (it was altered, or not signed by the key it carries).`, {hint: 'Try this: create the request again on the host that holds the key (openssl req -new -key KEY -out REQ.csr)'})
  const bc = req.extensions.find((e) => e.type === OID_BASIC_CONSTRAINTS) as x509.BasicConstraintsExtension | undefined
  if (bc?.ca) throw new DataError('E_CSR_CA', `${path} asks for a CA certificate (basicConstraints CA:true): refused, this CA issues server and client certificates only.`, {hint: 'Try this: create the request without -addext basicConstraints=CA:TRUE'})
  let key: KeyObject
  try {
    key = createPublicKey({format: 'der', key: Buffer.from(req.publicKey.rawData), type: 'spki'})
  } catch (error) {
    throw badPem(path, pem, 'certificate request', error)
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0
  if (key.asymmetricKeyType !== 'rsa' || bits < 2048) {
    throw new DataError('E_CSR_KEY', `${path} holds a${key.asymmetricKeyType === 'rsa' ? ` ${bits}-bit RSA` : `n ${key.asymmetricKeyType}`} key: this CA signs RSA keys of 2048 bits or more.`, {hint: 'Try this: openssl req -new -newkey rsa:2048 -nodes -keyout KEY -out REQ.csr'})
  }
  const san = req.extensions.find((e) => e.type === OID_SAN) as x509.SubjectAlternativeNameExtension | undefined
  const sans = (san?.names.toJSON() ?? []).filter((n) => n.type === 'dns' || n.type === 'ip').map((n) => `${n.type === 'dns' ? 'DNS' : 'IP'}:${n.value}`)
  return {cn: req.subjectName.getField('CN')[0], publicPem: key.export({format: 'pem', type: 'spki'}).toString(), sans}
}

/** What a server (broker, proxy, relay) runs before loading its TLS material: see ensureCrl. */
export async function ensureCrlAtStart(home: MqHome, cfg: MqConfig['pki'], logger: Pick<Logger, 'warn'>): Promise<void> {
  const r = await CertificateAuthority.open(home, cfg).ensureCrl()
  if (r.rebuilt) logger.warn('pki/crl.pem was missing: rebuilt it from pki/index.json', {revoked: r.revoked})
}
