/**
 * Where a sender finds a recipient's certified public keys, and a receiver a sender's:
 *   1. $MQ_HOME/keys/NAME.crt + NAME.sign.crt   identities made here with mq keygen
 *   2. $MQ_HOME/keys/cache/NAME.crt + NAME.sign.crt   certificates fetched before
 *   3. the broker's key directory (mq keys publish NAME puts them there), then cached
 * Every source is untrusted: the certificates are checked against our CA, the CRL and the
 * name on every use (verifyIdentityCerts), so neither the broker nor a stale cache can slip in
 * a key our CA did not certify for that name, or one that has since been revoked.
 *
 * Failures of this machine or of the broker are not verdicts on a key: a local key file that exists
 * but cannot be read is E_KEY_READ (75) and an unreachable or failing directory E_KEY_DIRECTORY (69),
 * so a receiver puts the message back instead of rejecting it. Writing the cache is best effort.
 */
import type {KeyObject} from 'node:crypto'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'

import type {MqHome} from '../config/home.js'
import {ExitCode, MqError, NotFoundError, TempFailError, UnavailableError} from '../errors.js'
import {type E2eIdentity, identityFiles, loadIdentity, verifyIdentityCerts} from '../pki/index.js'
import {ensureDir, writeFileAtomic} from '../util/fs.js'
import {checkName} from '../util/names.js'
import {type SenderResolver, spkiSha256} from './envelope.js'

/** The part of BrokerClient that is the key directory. */
export interface KeyDirectory {
  getKey(name: string): Promise<{encCertPem: string; signCertPem: string} | null>
  putKey(name: string, encCertPem: string, signCertPem: string): Promise<void>
}

export type KeySourceName = 'local' | 'cache' | 'directory'

export interface ResolvedIdentity extends E2eIdentity {
  source: KeySourceName
}

/** Identity and recipient names: the one check of src/lib/util/names.ts. */
export function checkIdentityName(name: string): string {
  return checkName(name)
}

export function keyCacheDir(home: MqHome): string {
  return join(home.keys, 'cache')
}

export function cachedCertFiles(home: MqHome, name: string): {encCert: string; signCert: string} {
  return {encCert: join(keyCacheDir(home), `${checkName(name)}.crt`), signCert: join(keyCacheDir(home), `${name}.sign.crt`)}
}

/** Errors that mean "this copy is no good, but a fresher one might be" (a rotated key). */
const STALE = new Set(['E_IDENTITY_REVOKED', 'E_IDENTITY_EXPIRED', 'E_IDENTITY_UNTRUSTED'])

const MEMO_MS = 30_000

export class IdentityResolver {
  /** verified identities, checked again after MEMO_MS so a revocation (new CRL) takes effect in long runs */
  private readonly memo = new Map<string, {id: ResolvedIdentity; at: number}>()
  /** lookups that reached the broker's directory */
  fetches = 0

  constructor(
    private readonly home: MqHome,
    private readonly directory?: KeyDirectory,
    /** told when fetched keys could not be cached (they are used all the same) */
    private readonly warn?: (message: string) => void,
  ) {}

  /** Both files, or null when either is absent; any other read error is E_KEY_READ (temporary). */
  private read(files: {encCert: string; signCert: string}): {enc: string; sign: string} | null {
    const one = (file: string): string | null => {
      try {
        return readFileSync(file, 'utf8')
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code
        if (code === 'ENOENT' || code === 'ENOTDIR') return null
        throw new TempFailError('E_KEY_READ', `Cannot read ${file}: ${(error as Error).message}`, {
          cause: error,
          hint: `Try this: check the owner and permissions of ${file} (the user running mq must be able to read it).`,
        })
      }
    }
    const enc = one(files.encCert)
    const sign = enc === null ? null : one(files.signCert)
    return enc === null || sign === null ? null : {enc, sign}
  }

  /**
   * The verified certificates of `name` (with `refresh`, fetched from the directory only). Throws E_IDENTITY_REVOKED / E_IDENTITY_UNTRUSTED /
   * E_IDENTITY_EXPIRED (77) when the only copy found fails the check, E_RECIPIENT_UNKNOWN when
   * none is found.
   */
  async resolve(name: string, opts: {refresh?: boolean} = {}): Promise<ResolvedIdentity> {
    checkIdentityName(name)
    if (!opts.refresh) {
      const hit = this.memo.get(name)
      if (hit && Date.now() - hit.at < MEMO_MS) return hit.id
    }
    let firstError: MqError | undefined
    const attempt = (pems: {enc: string; sign: string}, source: KeySourceName): ResolvedIdentity | undefined => {
      try {
        return {...verifyIdentityCerts(this.home, name, pems.enc, pems.sign), source}
      } catch (error) {
        if (error instanceof MqError && STALE.has(error.code)) {
          firstError ??= error
          return undefined
        }
        throw error
      }
    }
    // refresh: straight to the directory (a rotated key), skipping local files and the cache
    const local = opts.refresh ? null : this.read({encCert: identityFiles(this.home, name).encCert, signCert: identityFiles(this.home, name).signCert})
    let found = local ? attempt(local, 'local') : undefined
    if (!found && !opts.refresh) {
      const cached = this.read(cachedCertFiles(this.home, name))
      if (cached) found = attempt(cached, 'cache')
    }
    if (!found && this.directory) {
      this.fetches++
      let remote: {encCertPem: string; signCertPem: string} | null
      try {
        remote = await this.directory.getKey(name)
      } catch (error) {
        throw new UnavailableError('E_KEY_DIRECTORY', `Cannot fetch the keys of ${name} from the broker's key directory: ${(error as Error).message}`, {cause: error, hint: 'Try this: check the broker is running (mq broker status).'})
      }
      if (remote) {
        found = attempt({enc: remote.encCertPem, sign: remote.signCertPem}, 'directory')
        if (found) this.store(name, remote.encCertPem, remote.signCertPem)
      }
    }
    if (!found) {
      if (firstError) throw firstError
      throw new NotFoundError('E_RECIPIENT_UNKNOWN', `No certified keys for ${name}: not in ${this.home.keys}, its cache, or the broker's key directory.`, {
        hint: `Try this: ${name} runs mq keygen ${name} and mq keys publish ${name}.`,
      })
    }
    this.memo.set(name, {at: Date.now(), id: found})
    return found
  }

  /** Best effort: the keys were verified, so a cache that cannot be written only costs a fetch next time. */
  private store(name: string, encCertPem: string, signCertPem: string): void {
    try {
      ensureDir(keyCacheDir(this.home), 0o700)
      const f = cachedCertFiles(this.home, name)
      writeFileAtomic(f.encCert, encCertPem, 0o644)
      writeFileAtomic(f.signCert, signCertPem, 0o644)
    } catch (error) {
      this.warn?.(`Could not cache the keys of ${name} in ${keyCacheDir(this.home)}: ${(error as Error).message} (they were verified and are used; the next run fetches them again).`)
    }
  }

  /** For EnvelopeOpener: the certified signing key of a sender, refetched once if the envelope names a newer key. */
  senderResolver(): SenderResolver {
    return async (name, fingerprint) => {
      let id = await this.resolve(name)
      if (spkiSha256(id.signPublicKey) !== fingerprint && id.source !== 'local') id = await this.resolve(name, {refresh: true})
      return id.signPublicKey
    }
  }
}

/** Puts one of our own identities into the broker's key directory, after checking it ourselves. */
export async function publishIdentity(home: MqHome, directory: KeyDirectory, name: string): Promise<E2eIdentity> {
  checkIdentityName(name)
  const f = identityFiles(home, name)
  if (!existsSync(f.encCert) || !existsSync(f.signCert)) {
    throw new MqError('E_IDENTITY_NOT_FOUND', `No end-to-end identity named ${JSON.stringify(name)} in ${home.keys}.`, {exit: ExitCode.NOPERM, hint: `Try this: mq keygen ${name}`})
  }
  const id = verifyIdentityCerts(home, name, readFileSync(f.encCert, 'utf8'), readFileSync(f.signCert, 'utf8'))
  await directory.putKey(name, id.encCertPem, id.signCertPem)
  return id
}

/**
 * One of our own identities with its private keys, for signing (send) or decrypting (recv). With
 * `forSigning`, its certificates are first checked against the CA, the CRL and the local index
 * like any sender's: a revoked, expired or foreign identity must not sign (receivers would refuse
 * the message later; refusing now tells the sender and publishes nothing).
 */
export function loadOwnIdentity(home: MqHome, name: string, flag: string, opts: {forSigning?: boolean} = {}): E2eIdentity & {encPrivateKey: KeyObject; signPrivateKey: KeyObject} {
  try {
    const id = loadIdentity(home, name, {withPrivate: true}) as E2eIdentity & {encPrivateKey: KeyObject; signPrivateKey: KeyObject}
    if (opts.forSigning) {
      try {
        verifyIdentityCerts(home, name, id.encCertPem, id.signCertPem)
      } catch (error) {
        if (!(error instanceof MqError) || error.code === 'E_BAD_PEM') throw error
        throw new MqError(error.code, `Refusing to sign as ${name}: ${error.message}`, {exit: error.exit, hint: `Try this: send as an identity in good standing (${flag} NAME), or issue ${name} a new key (mq keygen ${name} --force).`})
      }
    }
    return id
  } catch (error) {
    if (error instanceof MqError && error.code === 'E_IDENTITY_NOT_FOUND') {
      throw new MqError(error.code, error.message, {exit: ExitCode.NOPERM, hint: `Try this: pass ${flag} NAME for an identity you hold (mq keygen NAME), or --identity NAME when it is also your TLS identity.`})
    }
    throw error
  }
}
