import {createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject} from 'node:crypto'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'

import {SignJWT, errors as joseErrors, jwtVerify} from 'jose'

import type {MqHome} from '../config/home.js'
import {HttpError} from '../http/errors.js'
import type {RecordsStore, UserRole} from '../records/store.js'
import {assertPrivateFile, ensurePrivateDir, writeSecretFile} from '../util/fs.js'

/** The only algorithm accepted: a token signed any other way (none, HS256 with the public key...) is refused. */
export const JWT_ALG = 'EdDSA'
export const JWT_ISSUER = 'mq-portal'
export const JWT_AUDIENCE = 'mq-portal-api'

export interface PortalUser {
  id: number
  email: string
  role: UserRole
  client_id: string | null
  /** the login session (refresh-token family) the access token belongs to */
  session: string
}

export interface TokenPair {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  refresh_token: string
  refresh_expires_in: number
}

/**
 * The portal's signing key: Ed25519 in $MQ_HOME/secrets/portal-jwt.key (0600), made on first
 * start. Portals behind one load balancer share it with the rest of $MQ_HOME.
 */
export function loadSigningKey(home: MqHome): {privateKey: KeyObject; publicKey: KeyObject} {
  const file = join(home.secrets, 'portal-jwt.key')
  if (!existsSync(file)) {
    ensurePrivateDir(home.secrets)
    const {privateKey} = generateKeyPairSync('ed25519')
    writeSecretFile(file, privateKey.export({format: 'pem', type: 'pkcs8'}) as string)
  }
  assertPrivateFile(file)
  const privateKey = createPrivateKey(readFileSync(file))
  return {privateKey, publicKey: createPublicKey(privateKey)}
}

/**
 * How long a checked session is taken as live without asking the store again. Revocations made by
 * this process (logout, refresh reuse, user deleted or re-passworded here) take effect at once;
 * ones made elsewhere (`mq user delete`, another portal) within this bound.
 */
export const SESSION_RECHECK_MS = 1000
// verified tokens kept (each about 1 KB); the oldest goes first
const VERIFIED_MAX = 10_000

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')
const iso = (ms: number) => new Date(ms).toISOString()
const unauthorized = (code: string, message: string) => new HttpError(401, code, message, {headers: {'www-authenticate': 'Bearer'}, hint: 'Try this: log in again (POST /portal/auth/login).'})

/**
 * Access tokens (short JWTs) and refresh tokens (random, stored only as SHA-256, single use).
 * Every login starts a session, the family of its refresh tokens: each refresh rotates the token,
 * and presenting a used one again (a stolen copy) revokes the whole family. Access tokens name
 * their session, which is checked on every request, so logout and user deletion take effect at once.
 */
export class TokenService {
  /** access token -> its user, the expiry its signature vouches for, and when its session was last found live */
  private readonly verified = new Map<string, {user: PortalUser; exp: number; checkedAt: number}>()
  /** bumped by sessionsChanged: a session lookup begun before a change must not refill the cache with its stale answer */
  private epoch = 0

  constructor(
    private readonly store: RecordsStore,
    private readonly key: {privateKey: KeyObject; publicKey: KeyObject},
    private readonly ttl: {accessS: number; refreshS: number},
  ) {}

  /** Starts a session for a user who just proved their password. */
  async login(user: {id: number; email: string; role: UserRole; client_id: string | null}, ip: string): Promise<TokenPair> {
    const session = randomBytes(16).toString('hex')
    await this.store.sql.run('INSERT INTO portal_sessions (id, user_id, ip, created_at) VALUES (?, ?, ?, ?)', [session, user.id, ip, iso(Date.now())])
    return this.pair({...user, session})
  }

  private async pair(user: PortalUser, tx = this.store.sql): Promise<TokenPair> {
    const refresh = randomBytes(32).toString('base64url')
    const t = Date.now()
    await tx.run('INSERT INTO portal_refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES (?, ?, ?, ?)', [sha256(refresh), user.session, iso(t), iso(t + this.ttl.refreshS * 1000)])
    const access = await new SignJWT({client: user.client_id, email: user.email, role: user.role, sid: user.session})
      .setProtectedHeader({alg: JWT_ALG, typ: 'JWT'})
      .setSubject(String(user.id))
      .setIssuer(JWT_ISSUER)
      .setAudience(JWT_AUDIENCE)
      .setIssuedAt(Math.floor(t / 1000))
      .setExpirationTime(Math.floor(t / 1000) + this.ttl.accessS)
      .setJti(randomBytes(16).toString('base64url'))
      .sign(this.key.privateKey)
    return {access_token: access, expires_in: this.ttl.accessS, refresh_expires_in: this.ttl.refreshS, refresh_token: refresh, token_type: 'Bearer'}
  }

  /**
   * Verifies an access token and its live session; the user's current role and client come from
   * the store. A token's signature and claims are checked once (the same string verifies the same
   * way until it expires); its session is looked up again after SESSION_RECHECK_MS.
   */
  async verify(token: string): Promise<PortalUser> {
    const now = Date.now()
    const epoch = this.epoch
    const hit = this.verified.get(token)
    if (hit && hit.exp * 1000 > now) {
      if (now - hit.checkedAt < SESSION_RECHECK_MS) return hit.user
      const user = await this.liveUser(hit.user.session, hit.user.id)
      if (epoch === this.epoch) this.remember(token, user, hit.exp, now)
      return user
    }
    if (hit) this.verified.delete(token)
    let sid: string
    let sub: number
    let exp: number
    try {
      const {payload} = await jwtVerify(token, this.key.publicKey, {algorithms: [JWT_ALG], audience: JWT_AUDIENCE, issuer: JWT_ISSUER, requiredClaims: ['exp', 'iat', 'jti', 'sub', 'sid']})
      sid = String(payload.sid)
      sub = Number(payload.sub)
      exp = Number(payload.exp)
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) throw unauthorized('E_TOKEN_EXPIRED', 'The access token has expired.')
      throw unauthorized('E_TOKEN_INVALID', 'The access token is not valid.')
    }
    const user = await this.liveUser(sid, sub)
    if (epoch === this.epoch) this.remember(token, user, exp, now)
    return user
  }

  private async liveUser(sid: string, sub: number): Promise<PortalUser> {
    const r = await this.store.sql.get<Record<string, unknown>>(
      'SELECT u.id, u.email, u.role, u.client_id, u.active, s.revoked_at FROM portal_sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?',
      [sid],
    )
    if (!r || Number(r.id) !== sub || r.revoked_at || Number(r.active) !== 1) throw unauthorized('E_SESSION_ENDED', 'The session has ended (logged out, password changed or user removed).')
    return {client_id: (r.client_id as string) ?? null, email: String(r.email), id: Number(r.id), role: String(r.role) as UserRole, session: sid}
  }

  private remember(token: string, user: PortalUser, exp: number, checkedAt: number): void {
    this.verified.delete(token)
    if (this.verified.size >= VERIFIED_MAX) this.verified.delete(this.verified.keys().next().value!)
    this.verified.set(token, {checkedAt, exp, user})
  }

  /** Sessions or users changed here (user deleted, password set): every token's session is looked up again. */
  sessionsChanged(): void {
    this.epoch++
    this.verified.clear()
  }

  /**
   * Rotates a refresh token. A token used before means a copy is in someone else's hands: the
   * whole session is revoked (returned as `reuse` so the caller audits it).
   */
  async refresh(token: string): Promise<{pair: TokenPair; user: PortalUser} | {reuse: {session: string; email: string}}> {
    const hash = sha256(token)
    const row = await this.store.sql.get<Record<string, unknown>>(
      'SELECT t.session_id, t.expires_at, t.used_at, s.revoked_at, u.id, u.email, u.role, u.client_id, u.active FROM portal_refresh_tokens t JOIN portal_sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id WHERE t.token_hash = ?',
      [hash],
    )
    if (!row) throw unauthorized('E_REFRESH_INVALID', 'The refresh token is not valid.')
    const session = String(row.session_id)
    if (row.revoked_at || Number(row.active) !== 1) throw unauthorized('E_SESSION_ENDED', 'The session has ended.')
    if (row.used_at) {
      await this.revokeSession(session, 'refresh-reuse')
      return {reuse: {email: String(row.email), session}}
    }
    if (String(row.expires_at) < iso(Date.now())) throw unauthorized('E_REFRESH_EXPIRED', 'The refresh token has expired.')
    const user: PortalUser = {client_id: (row.client_id as string) ?? null, email: String(row.email), id: Number(row.id), role: String(row.role) as UserRole, session}
    const pair = await this.store.sql.transaction(async (tx) => {
      // only one of two concurrent refreshes with the same token wins; the other counts as reuse
      const used = await tx.run('UPDATE portal_refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL', [iso(Date.now()), hash])
      if (used.changes !== 1) return undefined
      return this.pair(user, tx)
    })
    if (!pair) {
      await this.revokeSession(session, 'refresh-reuse')
      return {reuse: {email: user.email, session}}
    }
    return {pair, user}
  }

  async revokeSession(session: string, reason: string): Promise<void> {
    await this.store.sql.run('UPDATE portal_sessions SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL', [iso(Date.now()), reason, session])
    this.sessionsChanged()
  }
}
