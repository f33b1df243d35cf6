import {randomBytes, scrypt, timingSafeEqual} from 'node:crypto'
import {availableParallelism} from 'node:os'

import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {DataError, MqError, UnavailableError} from '../errors.js'
import {migrate, openStore, type SqlStore} from '../store/sql.js'
import {PHONE_RE, PhoneHasher, RecordsKeyring, maskPhone} from './crypto.js'
import {RECORDS_MIGRATIONS, RECORDS_MIGRATIONS_TABLE} from './migrations.js'
import {NOT_ACCEPTED} from './not-accepted.js'

export const MESSAGE_STATUSES = ['queued', 'processing', 'delivered', 'failed'] as const
export type MessageStatus = (typeof MESSAGE_STATUSES)[number]
export const CLIENT_STATUSES = ['active', 'revoked', 'expired'] as const
export type ClientStatus = (typeof CLIENT_STATUSES)[number]
export const USER_ROLES = ['admin', 'user'] as const
export type UserRole = (typeof USER_ROLES)[number]

/** What a client submitted; sealed as one unit, so the number and metadata are never stored in clear. */
export interface MessagePayload {
  sender_number: string
  message_body: string
  metadata?: Record<string, unknown>
}

/** A message row as operators see it: no plaintext, masked number. */
export interface MessageRecord {
  message_id: string
  client_id: string
  sender_hash: string
  sender_masked: string
  status: MessageStatus
  attempts: number
  last_error: string | null
  key_version: number
  queued_at: string
  delivered_at: string | null
  last_attempt_at: string | null
  updated_at: string
}

/** The fields of a message row a delivery reads. */
export type DeliveryRecord = Pick<MessageRecord, 'message_id' | 'client_id' | 'status' | 'queued_at' | 'delivered_at'>

export interface ClientRecord {
  identity: string
  serial: string
  fingerprint: string | null
  status: ClientStatus
  issued_at: string | null
  expires_at: string | null
  revoked_at: string | null
  reason: string | null
  last_seen_at: string | null
}

export interface AuditEvent {
  event_type: string
  actor?: string | null
  identity?: string | null
  ip?: string | null
  data?: Record<string, unknown>
  severity?: 'info' | 'warning' | 'critical'
}

export interface RecordsStats {
  messages: {total: number; queued: number; processing: number; delivered: number; failed: number; last_24h: number; last_7d: number}
  clients: {total: number; active: number; revoked: number; expired: number}
  users: {total: number}
}

const MESSAGE_COLS = 'message_id, client_id, sender_hash, sender_masked, status, attempts, last_error, key_version, queued_at, delivered_at, last_attempt_at, updated_at'
const CLIENT_COLS = 'identity, serial, fingerprint, status, issued_at, expires_at, revoked_at, reason, last_seen_at'
export const MESSAGE_ID_RE = /^[A-Za-z0-9._:-]{1,64}$/

export {NOT_ACCEPTED}

const now = () => new Date().toISOString()

const INSERT_ONE = "INSERT INTO messages (message_id, client_id, sender_hash, sender_masked, body_enc, key_version, status, attempts, queued_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?)"
/**
 * The row counts a register batch's INSERTs are cut into on MySQL: a few statement texts, each
 * prepared once; one round trip per chunk instead of one per message (broker CPU per registration
 * in batches of 21: 92 -> 70 us). SQLite has no round trip to save and its reused one-row
 * statement was cheaper than multi-row ones (26 vs 34 us), so it stays one row per statement.
 */
const MYSQL_INSERT_CHUNKS = [64, 16, 4, 1]
const INSERT_MANY: Record<number, string> = Object.fromEntries(MYSQL_INSERT_CHUNKS.map((n) => [n, INSERT_ONE + ", (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?)".repeat(n - 1)]))

/** IN-list sizes of MySQL's batched "delivered" marks (a chunk is padded up to the next size). */
const MARK_CHUNKS = [2, 4, 8, 16, 32, 64, 128, 256]
const markMany = (attempts: string, n: number) =>
  `UPDATE messages SET status = 'delivered', delivered_at = ?, last_attempt_at = ?, updated_at = ?, attempts = ${attempts}, last_error = NULL WHERE message_id IN (${Array(n).fill('?').join(', ')}) AND status <> 'delivered'`
const MARK_MANY_SET: Record<number, string> = Object.fromEntries(MARK_CHUNKS.map((n) => [n, markMany('?', n)]))
const MARK_MANY_NEXT: Record<number, string> = Object.fromEntries(MARK_CHUNKS.map((n) => [n, markMany('attempts + 1', n)]))
/** A batched mark changed fewer rows than it named: redone row by row for per-item outcomes. */
const MIXED = new Error('mixed delivered marks')

export function isUniqueViolation(err: unknown): boolean {
  const e = err as {code?: string; errno?: number}
  return e?.code === 'SQLITE_CONSTRAINT_UNIQUE' || e?.code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || e?.code === 'ER_DUP_ENTRY' || e?.errno === 1062
}

/** Turns driver failures (MySQL down, disk full) into UnavailableError; keeps MqErrors as they are. */
export function storeFailure(err: unknown, label: string): MqError {
  if (err instanceof MqError) return err
  return new UnavailableError('E_STORE_UNAVAILABLE', `The records store (${label}) failed: ${(err as Error)?.message ?? err}`, {
    cause: err,
    hint: 'Try this: check that the database runs and store.url is right; the request can be retried.',
  })
}

function toRecord(r: Record<string, unknown>): MessageRecord {
  return {...(r as unknown as MessageRecord), attempts: Number(r.attempts), key_version: Number(r.key_version)}
}

/**
 * The broker's records: messages (sealed bodies, hashed senders), clients, users and the audit
 * log, on SQLite or MySQL. Only the broker process opens it; everyone else goes through its API.
 */
export class RecordsStore {
  private constructor(
    readonly sql: SqlStore,
    readonly keyring: RecordsKeyring,
    readonly hasher: PhoneHasher,
  ) {}

  static async open(opts: {config: Pick<MqConfig, 'store'>; home: MqHome; url?: string}): Promise<RecordsStore> {
    const keyring = RecordsKeyring.open(opts.home)
    const hasher = PhoneHasher.open(opts.home)
    const sql = await openStore({dataDir: opts.home.data, file: 'records.db', url: opts.url ?? process.env.MQ_STORE_URL ?? opts.config.store.url})
    try {
      await RecordsStore.migrate(sql)
    } catch (error) {
      await sql.close().catch(() => {})
      throw storeFailure(error, sql.label)
    }
    return new RecordsStore(sql, keyring, hasher)
  }

  static migrate(sql: SqlStore): Promise<number[]> {
    return migrate(sql, RECORDS_MIGRATIONS_TABLE, RECORDS_MIGRATIONS)
  }

  async close(): Promise<void> {
    await this.sql.close()
  }

  /** Wraps driver errors so callers map them to 503. */
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (error) {
      throw storeFailure(error, this.sql.label)
    }
  }

  /**
   * Records a new queued message. Idempotent by message_id: registering the same id again for
   * the same client returns the existing row with created=false.
   */
  async register(input: {messageId: string; clientId: string; payload: MessagePayload; queuedAt?: string}): Promise<{record: MessageRecord; created: boolean}> {
    const {messageId, clientId, payload} = input
    if (!MESSAGE_ID_RE.test(messageId)) throw new DataError('E_MESSAGE_ID', `message_id ${JSON.stringify(messageId)} is not 1-64 characters of [A-Za-z0-9._:-].`)
    if (!PHONE_RE.test(payload.sender_number)) throw new DataError('E_SENDER_NUMBER', 'sender_number is not an E.164 number like +4915200000000.')
    const t = input.queuedAt ?? now()
    const sealed = this.keyring.seal(Buffer.from(JSON.stringify(payload)), messageId)
    return this.guard(async () => {
      try {
        await this.sql.run(
          'INSERT INTO messages (message_id, client_id, sender_hash, sender_masked, body_enc, key_version, status, attempts, queued_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)',
          [messageId, clientId, this.hasher.hash(payload.sender_number), maskPhone(payload.sender_number), sealed.data, sealed.keyVersion, 'queued', t, t],
        )
        return {created: true, record: (await this.get(messageId))!}
      } catch (error) {
        if (!isUniqueViolation(error)) throw error
        const existing = await this.get(messageId)
        if (!existing || existing.client_id !== clientId) {
          throw new MqError('E_MESSAGE_ID_TAKEN', `message_id ${messageId} belongs to another client.`, {details: {status: 409}})
        }
        if (await this.revive(this.sql, existing)) return {created: true, record: (await this.get(messageId))!}
        return {created: false, record: existing}
      }
    })
  }

  /**
   * Registers many messages in one transaction (the proxy batches concurrent requests). Each item
   * gets its own outcome: the record, or the error that refused it; one bad item fails no other.
   */
  async registerMany(
    items: {messageId: string; clientId: string; payload: MessagePayload; queuedAt?: string}[],
    opts: {deadline?: number} = {},
  ): Promise<({record: Pick<MessageRecord, 'message_id' | 'client_id' | 'status' | 'queued_at'>; created: boolean; late?: boolean} | {error: MqError})[]> {
    const t = now()
    const sealed = items.map((it) => {
      if (!MESSAGE_ID_RE.test(it.messageId)) return new DataError('E_MESSAGE_ID', `message_id ${JSON.stringify(it.messageId)} is not 1-64 characters of [A-Za-z0-9._:-].`)
      if (!PHONE_RE.test(it.payload.sender_number)) return new DataError('E_SENDER_NUMBER', 'sender_number is not an E.164 number like +4915200000000.')
      return {hash: this.hasher.hash(it.payload.sender_number), masked: maskPhone(it.payload.sender_number), sealed: this.keyring.seal(Buffer.from(JSON.stringify(it.payload)), it.messageId), t: it.queuedAt ?? t}
    })
    type Outcome = {record: Pick<MessageRecord, 'message_id' | 'client_id' | 'status' | 'queued_at'>; created: boolean; late?: boolean} | {error: MqError}
    return this.guard(() =>
      this.sql.transaction(async (tx) => {
        const out: Outcome[] = []
        const row = (i: number) => {
          const s = sealed[i] as Exclude<(typeof sealed)[number], MqError>
          return [items[i].messageId, items[i].clientId, s.hash, s.masked, s.sealed.data, s.sealed.keyVersion, s.t, s.t]
        }
        const inserted = (i: number): Outcome => ({created: true, record: {client_id: items[i].clientId, message_id: items[i].messageId, queued_at: (sealed[i] as {t: string}).t, status: 'queued'}})
        const insertOne = async (i: number): Promise<Outcome> => {
          const it = items[i]
          try {
            await tx.run(INSERT_ONE, row(i))
            return inserted(i)
          } catch (error) {
            if (!isUniqueViolation(error)) throw error
            const existing = await tx.get<MessageRecord>(`SELECT ${MESSAGE_COLS} FROM messages WHERE message_id = ?`, [it.messageId])
            if (!existing || existing.client_id !== it.clientId) return {error: new MqError('E_MESSAGE_ID_TAKEN', `message_id ${it.messageId} belongs to another client.`, {details: {status: 409}})}
            if (await this.revive(tx, existing)) return {created: true, record: {...existing, status: 'queued'}}
            return {created: false, record: existing}
          }
        }
        if (tx.dialect === 'sqlite') {
          for (const [i, s] of sealed.entries()) out.push(s instanceof MqError ? {error: s} : await insertOne(i))
        } else {
          // One statement per chunk of rows instead of one per row: one round trip instead of many.
          // An id already taken fails the chunk's statement only (InnoDB rolls back just the
          // statement), and that chunk is then inserted row by row, each with its own outcome.
          for (const [i, s] of sealed.entries()) if (s instanceof MqError) out[i] = {error: s}
          const valid = items.flatMap((_, i) => (sealed[i] instanceof MqError ? [] : [i]))
          for (let k = 0; k < valid.length; ) {
            const n = MYSQL_INSERT_CHUNKS.find((c) => c <= valid.length - k)!
            const chunk = valid.slice(k, k + n)
            k += n
            if (n > 1) {
              try {
                await tx.run(INSERT_MANY[n], chunk.flatMap(row))
                for (const i of chunk) out[i] = inserted(i)
                continue
              } catch (error) {
                if (!isUniqueViolation(error)) throw error
              }
            }
            for (const i of chunk) out[i] = await insertOne(i)
          }
        }
        // The caller (the proxy) answers 503 at its deadline. Rows written after it (the database hung
        // in the middle of this transaction) belong to requests that were not accepted: they commit as
        // failed, in this same transaction, so no crash can leave them queued.
        if (opts.deadline !== undefined && Date.now() > opts.deadline) {
          const created = out.flatMap((o) => ('record' in o && o.created ? [o.record.message_id] : []))
          if (created.length) await this.markNotAccepted(created, 'the records store answered after the proxy had answered 503', tx)
          for (const o of out) if ('record' in o) o.late = true
        }
        return out
      }),
    )
  }

  async get(messageId: string): Promise<MessageRecord | undefined> {
    return this.guard(async () => {
      const r = await this.sql.get<Record<string, unknown>>(`SELECT ${MESSAGE_COLS} FROM messages WHERE message_id = ?`, [messageId])
      return r ? toRecord(r) : undefined
    })
  }

  /** A record failed as not accepted goes back to queued when its request is retried (same Idempotency-Key). */
  private async revive(sql: SqlStore, existing: Pick<MessageRecord, 'message_id' | 'status' | 'last_error'>): Promise<boolean> {
    if (existing.status !== 'failed' || !existing.last_error?.startsWith(NOT_ACCEPTED)) return false
    const r = await sql.run(`UPDATE messages SET status = 'queued', last_error = NULL, updated_at = ? WHERE message_id = ? AND status = 'failed' AND last_error LIKE '${NOT_ACCEPTED}%'`, [now(), existing.message_id])
    return r.changes > 0
  }

  /**
   * Records whose requests were answered 503 end failed (never delivered): only while still queued,
   * so a record another request got accepted and delivered meanwhile keeps its status.
   */
  async markNotAccepted(ids: string[], why: string, sql: SqlStore = this.sql): Promise<number> {
    let n = 0
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500)
      const t = now()
      const r = await this.guard(() =>
        sql.run(`UPDATE messages SET status = 'failed', last_error = ?, updated_at = ? WHERE status = 'queued' AND message_id IN (${chunk.map(() => '?').join(', ')})`, [`${NOT_ACCEPTED}: ${why}`, t, ...chunk]),
      )
      n += r.changes
    }
    return n
  }

  /**
   * Records still waiting for delivery (queued, or processing: between attempts) that were queued
   * before `before`, oldest first, a page at a time: what the worker's reconciler compares with Redis.
   */
  async undelivered(opts: {before: string; after?: {at: string; id: number}; limit: number}): Promise<{messages: {id: number; message_id: string; client_id: string; status: string; attempts: number; queued_at: string}[]}> {
    const params: (string | number)[] = [opts.before]
    let page = ''
    if (opts.after) page = ' AND (queued_at > ? OR (queued_at = ? AND id > ?))', params.push(opts.after.at, opts.after.at, opts.after.id)
    const limit = Math.max(1, Math.min(10_000, Math.trunc(opts.limit)))
    // one query per status, each read in the order of the (status, queued_at) index (the id rides in it),
    // so a large backlog is never sorted; merged here
    const rows: Record<string, unknown>[] = []
    for (const status of ['queued', 'processing']) {
      rows.push(
        ...(await this.guard(() =>
          this.sql.all<Record<string, unknown>>(`SELECT id, message_id, client_id, status, attempts, queued_at FROM messages WHERE status = ? AND queued_at < ?${page} ORDER BY queued_at, id LIMIT ${limit}`, [status, ...params]),
        )),
      )
    }
    rows.sort((a, b) => (String(a.queued_at) < String(b.queued_at) ? -1 : String(a.queued_at) > String(b.queued_at) ? 1 : Number(a.id) - Number(b.id)))
    rows.splice(limit)
    return {messages: rows.map((r) => ({attempts: Number(r.attempts), client_id: String(r.client_id), id: Number(r.id), message_id: String(r.message_id), queued_at: String(r.queued_at), status: String(r.status)}))}
  }

  /** Decrypts a message's payload (for delivery, and for audited admin views). */
  async payload(messageId: string): Promise<{record: MessageRecord; payload: MessagePayload} | undefined> {
    const row = await this.guard(() => this.sql.get<Record<string, unknown>>(`SELECT ${MESSAGE_COLS}, body_enc FROM messages WHERE message_id = ?`, [messageId]))
    if (!row) return undefined
    const plain = this.keyring.open({data: Buffer.from(row.body_enc as Uint8Array), keyVersion: Number(row.key_version)}, messageId)
    const {body_enc: _, ...rest} = row
    return {payload: JSON.parse(plain.toString('utf8')) as MessagePayload, record: toRecord(rest)}
  }

  /** Marks delivered unless it already is; `changed` is false for a repeat. */
  async markDelivered(messageId: string, attempts?: number): Promise<{record: MessageRecord; changed: boolean}> {
    return this.guard(async () => {
      const t = now()
      const r = await this.sql.run(
        `UPDATE messages SET status = 'delivered', delivered_at = ?, last_attempt_at = ?, updated_at = ?, attempts = ${attempts === undefined ? 'attempts + 1' : '?'}, last_error = NULL WHERE message_id = ? AND status <> 'delivered'`,
        attempts === undefined ? [t, t, t, messageId] : [t, t, t, attempts, messageId],
      )
      const record = await this.get(messageId)
      if (!record) throw new MqError('E_NOT_FOUND', `No message ${messageId}.`, {details: {status: 404}})
      return {changed: r.changes > 0, record}
    })
  }

  /**
   * Marks many delivered in one transaction; per item, whether it changed (false = already delivered).
   * On MySQL the rows of one attempts value go in one UPDATE per chunk (IN lists of MARK_CHUNKS ids,
   * padded with a repeated id so only a few statement texts are ever prepared): one round trip per
   * chunk instead of one per message. The UPDATE stays the transaction's first statement (the
   * broker-crash test watches for it). Its matched-row count says exactly how many rows changed (the
   * WHERE excludes delivered rows); when that is not the whole chunk (a repeat), the transaction is
   * rolled back and redone row by row, so each item still learns its own outcome.
   */
  async markDeliveredMany(items: {messageId: string; attempts?: number}[]): Promise<{changed: boolean; at: string}[]> {
    if (this.sql.dialect === 'mysql' && items.length > 1 && new Set(items.map((it) => it.messageId)).size === items.length) {
      const all = await this.guard(() => this.markDeliveredChunks(items).catch((error) => (error === MIXED ? undefined : Promise.reject(error))))
      if (all) return all
    }
    return this.guard(() =>
      this.sql.transaction(async (tx) => {
        const t = now()
        const out: {changed: boolean; at: string}[] = []
        for (const it of items) {
          const r = await tx.run(
            `UPDATE messages SET status = 'delivered', delivered_at = ?, last_attempt_at = ?, updated_at = ?, attempts = ${it.attempts === undefined ? 'attempts + 1' : '?'}, last_error = NULL WHERE message_id = ? AND status <> 'delivered'`,
            it.attempts === undefined ? [t, t, t, it.messageId] : [t, t, t, it.attempts, it.messageId],
          )
          out.push({at: t, changed: r.changes > 0})
        }
        return out
      }),
    )
  }

  /** MySQL: every item changed, or throws MIXED (and the transaction rolls back). Ids are distinct. */
  private markDeliveredChunks(items: {messageId: string; attempts?: number}[]): Promise<{changed: boolean; at: string}[]> {
    return this.sql.transaction(async (tx) => {
      const t = now()
      const groups = new Map<number | undefined, string[]>()
      for (const it of items) {
        const g = groups.get(it.attempts)
        if (g) g.push(it.messageId)
        else groups.set(it.attempts, [it.messageId])
      }
      for (const [attempts, ids] of groups) {
        for (let i = 0; i < ids.length; i += MARK_CHUNKS.at(-1)!) {
          const chunk = ids.slice(i, i + MARK_CHUNKS.at(-1)!)
          const n = MARK_CHUNKS.find((c) => c >= chunk.length)!
          const padded = chunk.concat(Array.from({length: n - chunk.length}, () => chunk[0]))
          const r = await tx.run(attempts === undefined ? MARK_MANY_NEXT[n] : MARK_MANY_SET[n], attempts === undefined ? [t, t, t, ...padded] : [t, t, t, attempts, ...padded])
          if (r.changes !== chunk.length) throw MIXED
        }
      }
      return items.map(() => ({at: t, changed: true}))
    })
  }

  /**
   * Payloads of many messages in one query (missing ids are absent from the map), with the few
   * record fields a delivery reads: each column is a field the driver parses per row (MySQL).
   */
  async payloads(ids: string[]): Promise<Map<string, {record: DeliveryRecord; payload: MessagePayload}>> {
    const out = new Map<string, {record: DeliveryRecord; payload: MessagePayload}>()
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500)
      const rows = await this.guard(() =>
        this.sql.all<Record<string, unknown>>(`SELECT message_id, client_id, status, queued_at, delivered_at, key_version, body_enc FROM messages WHERE message_id IN (${chunk.map(() => '?').join(', ')})`, chunk),
      )
      for (const row of rows) {
        const id = String(row.message_id)
        const plain = this.keyring.open({data: Buffer.from(row.body_enc as Uint8Array), keyVersion: Number(row.key_version)}, id)
        const record = {client_id: row.client_id as string, delivered_at: row.delivered_at as string | null, message_id: id, queued_at: row.queued_at as string, status: row.status as MessageStatus}
        out.set(id, {payload: JSON.parse(plain.toString('utf8')) as MessagePayload, record})
      }
    }
    return out
  }

  /** Status changes from workers (retrying, failed). A delivered message stays delivered. */
  async setStatus(messageId: string, status: Exclude<MessageStatus, 'delivered'>, opts: {attempts?: number; error?: string | null} = {}): Promise<{record: MessageRecord; changed: boolean}> {
    return this.guard(async () => {
      const t = now()
      const sets = ['status = ?', 'updated_at = ?']
      const params: (string | number | null)[] = [status, t]
      if (opts.attempts !== undefined) sets.push('attempts = ?', 'last_attempt_at = ?'), params.push(opts.attempts, t)
      if (opts.error !== undefined) sets.push('last_error = ?'), params.push(opts.error === null ? null : opts.error.slice(0, 1000))
      const r = await this.sql.run(`UPDATE messages SET ${sets.join(', ')} WHERE message_id = ? AND status <> 'delivered'`, [...params, messageId])
      const record = await this.get(messageId)
      if (!record) throw new MqError('E_NOT_FOUND', `No message ${messageId}.`, {details: {status: 404}})
      return {changed: r.changes > 0, record}
    })
  }

  async list(opts: {client?: string; status?: string; limit?: number; before?: string} = {}): Promise<MessageRecord[]> {
    const where: string[] = []
    const params: string[] = []
    if (opts.client) where.push('client_id = ?'), params.push(opts.client)
    if (opts.status) where.push('status = ?'), params.push(opts.status)
    if (opts.before) where.push('queued_at < ?'), params.push(opts.before)
    const limit = Math.max(1, Math.min(10_000, Math.trunc(opts.limit ?? 50)))
    // LIMIT is an inlined integer: MySQL prepared statements reject a bound LIMIT on some versions.
    const sql = `SELECT ${MESSAGE_COLS} FROM messages ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY queued_at DESC, id DESC LIMIT ${limit}`
    return this.guard(async () => (await this.sql.all<Record<string, unknown>>(sql, params)).map(toRecord))
  }

  async stats(at = Date.now()): Promise<RecordsStats> {
    return this.guard(async () => {
      const byStatus = await this.sql.all<{status: string; n: number}>('SELECT status, COUNT(*) AS n FROM messages GROUP BY status')
      const count = async (sql: string, params: string[] = []) => Number((await this.sql.get<{n: number}>(sql, params))?.n ?? 0)
      const m = {delivered: 0, failed: 0, last_24h: 0, last_7d: 0, processing: 0, queued: 0, total: 0}
      for (const r of byStatus) {
        const n = Number(r.n)
        m.total += n
        if (r.status in m) m[r.status as MessageStatus] = n
      }
      m.last_24h = await count('SELECT COUNT(*) AS n FROM messages WHERE queued_at >= ?', [new Date(at - 86_400_000).toISOString()])
      m.last_7d = await count('SELECT COUNT(*) AS n FROM messages WHERE queued_at >= ?', [new Date(at - 7 * 86_400_000).toISOString()])
      const c = {active: 0, expired: 0, revoked: 0, total: 0}
      for (const r of await this.sql.all<{status: string; n: number}>('SELECT status, COUNT(*) AS n FROM clients GROUP BY status')) {
        c.total += Number(r.n)
        if (r.status in c) c[r.status as ClientStatus] = Number(r.n)
      }
      return {clients: c, messages: m, users: {total: await count('SELECT COUNT(*) AS n FROM users')}}
    })
  }

  // ---- clients -------------------------------------------------------------------------------

  /** Inserts or refreshes a client certificate row (by serial). */
  async upsertClient(c: Omit<ClientRecord, 'last_seen_at'> & {last_seen_at?: string | null}): Promise<void> {
    await this.guard(() =>
      this.sql.transaction(async (tx) => {
        const serial = c.serial.toLowerCase()
        const found = await tx.get('SELECT id FROM clients WHERE serial = ?', [serial])
        if (found) {
          await tx.run('UPDATE clients SET identity = ?, fingerprint = ?, status = ?, issued_at = ?, expires_at = ?, revoked_at = ?, reason = ? WHERE serial = ?', [
            c.identity, c.fingerprint, c.status, c.issued_at, c.expires_at, c.revoked_at, c.reason, serial,
          ])
        } else {
          await tx.run(`INSERT INTO clients (${CLIENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
            c.identity, serial, c.fingerprint, c.status, c.issued_at, c.expires_at, c.revoked_at, c.reason, c.last_seen_at ?? null,
          ])
        }
      }),
    )
  }

  /** Notes that a client was seen (by serial when known), creating a minimal row for unknown certificates. */
  async touchClient(identity: string, serial?: string): Promise<void> {
    if (!serial) return
    await this.guard(async () => {
      const r = await this.sql.run('UPDATE clients SET last_seen_at = ? WHERE serial = ?', [now(), serial.toLowerCase()])
      if (r.changes === 0) {
        try {
          await this.sql.run(`INSERT INTO clients (identity, serial, status, last_seen_at) VALUES (?, ?, 'active', ?)`, [identity, serial.toLowerCase(), now()])
        } catch (error) {
          if (!isUniqueViolation(error)) throw error
        }
      }
    })
  }

  async listClients(opts: {status?: string; identity?: string} = {}): Promise<ClientRecord[]> {
    const where: string[] = []
    const params: string[] = []
    if (opts.status) where.push('status = ?'), params.push(opts.status)
    if (opts.identity) where.push('identity = ?'), params.push(opts.identity)
    return this.guard(() => this.sql.all<ClientRecord>(`SELECT ${CLIENT_COLS} FROM clients ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY identity, issued_at`, params))
  }

  async markClientRevoked(serial: string, reason: string | null, at = now()): Promise<number> {
    return this.guard(async () => (await this.sql.run(`UPDATE clients SET status = 'revoked', revoked_at = ?, reason = ? WHERE serial = ?`, [at, reason, serial.toLowerCase()])).changes)
  }

  /**
   * One page of messages, newest first, by keyset (queued_at, id): a page costs the same at any
   * depth. `cursor` is the opaque `next` of the previous page.
   */
  async page(opts: {client?: string; status?: string; from?: string; to?: string; limit?: number; cursor?: string}): Promise<{messages: MessageRecord[]; next: string | null}> {
    const where: string[] = []
    const params: (string | number)[] = []
    if (opts.client !== undefined) where.push('client_id = ?'), params.push(opts.client)
    if (opts.status) where.push('status = ?'), params.push(opts.status)
    if (opts.from) where.push('queued_at >= ?'), params.push(opts.from)
    if (opts.to) where.push('queued_at < ?'), params.push(opts.to)
    if (opts.cursor) {
      const c = decodeCursor(opts.cursor)
      // `queued_at <= ?` first: a plain range the (client_id|status, queued_at) indexes seek to; the
      // OR only settles ties within one timestamp
      where.push('queued_at <= ? AND (queued_at < ? OR id < ?)'), params.push(c.at, c.at, c.id)
    }
    const limit = Math.max(1, Math.min(500, Math.trunc(opts.limit ?? 50)))
    // MariaDB/MySQL misjudge the keyset predicate and scan (0.5 s at 1M rows instead of a few ms):
    // name the index whose order is the page order
    const index = opts.client !== undefined ? (opts.status ? 'messages_client_status' : 'messages_client') : opts.status ? 'messages_status' : 'messages_queued'
    const hint = this.sql.dialect === 'mysql' ? ` FORCE INDEX (${index})` : ''
    const sql = `SELECT id, ${MESSAGE_COLS} FROM messages${hint} ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY queued_at DESC, id DESC LIMIT ${limit + 1}`
    const rows = await this.guard(() => this.sql.all<Record<string, unknown>>(sql, params))
    const more = rows.length > limit
    const pageRows = rows.slice(0, limit)
    const last = pageRows.at(-1)
    const next = more && last ? Buffer.from(`${last.queued_at}|${Number(last.id)}`).toString('base64url') : null
    return {messages: pageRows.map(({id: _id, ...r}) => toRecord(r)), next}
  }

  // ---- users (operator API / portal) ------------------------------------------------------------

  async createUser(email: string, password: string, role: UserRole, clientId: string | null = null): Promise<UserRecord> {
    if (!/^[^\s@]+@[^\s@]+$/.test(email) || email.length > 255) throw new DataError('E_USER_EMAIL', `${JSON.stringify(email)} is not an email address.`)
    checkPassword(password)
    if (clientId !== null && !/^[A-Za-z0-9._-]{1,255}$/.test(clientId)) throw new DataError('E_USER_CLIENT', `${JSON.stringify(clientId)} is not a client identity name.`)
    const t = now()
    await this.guard(async () => {
      try {
        await this.sql.run('INSERT INTO users (email, password_hash, role, client_id, active, created_at) VALUES (?, ?, ?, ?, 1, ?)', [email.toLowerCase(), await hashPassword(password), role, clientId, t])
      } catch (error) {
        if (isUniqueViolation(error)) throw new DataError('E_USER_EXISTS', `A user ${email} already exists.`, {details: {status: 409}, hint: 'Try this: mq user list'})
        throw error
      }
    })
    return (await this.getUser(email))!
  }

  async listUsers(): Promise<UserRecord[]> {
    const rows = await this.guard(() => this.sql.all<Record<string, unknown>>(`SELECT ${USER_COLS} FROM users ORDER BY email`))
    return rows.map(toUser)
  }

  /** A user by numeric id or e-mail address. */
  async getUser(idOrEmail: string | number): Promise<UserRecord | undefined> {
    const byId = typeof idOrEmail === 'number' || /^[0-9]+$/.test(idOrEmail)
    const r = await this.guard(() => this.sql.get<Record<string, unknown>>(`SELECT ${USER_COLS} FROM users WHERE ${byId ? 'id' : 'email'} = ?`, [byId ? Number(idOrEmail) : String(idOrEmail).toLowerCase()]))
    return r ? toUser(r) : undefined
  }

  /** Deletes a user (by id or e-mail) and ends their portal sessions. */
  async deleteUser(idOrEmail: string | number): Promise<UserRecord | undefined> {
    const u = await this.getUser(idOrEmail)
    if (!u) return undefined
    await this.guard(() =>
      this.sql.transaction(async (tx) => {
        await tx.run('DELETE FROM users WHERE id = ?', [u.id])
        await tx.run("UPDATE portal_sessions SET revoked_at = ?, revoked_reason = 'user-deleted' WHERE user_id = ? AND revoked_at IS NULL", [now(), u.id])
      }),
    )
    return u
  }

  /** Sets a new password (by id or e-mail) and ends the user's portal sessions. */
  async setPassword(idOrEmail: string | number, password: string): Promise<UserRecord | undefined> {
    checkPassword(password)
    const u = await this.getUser(idOrEmail)
    if (!u) return undefined
    const hash = await hashPassword(password)
    await this.guard(() =>
      this.sql.transaction(async (tx) => {
        await tx.run('UPDATE users SET password_hash = ? WHERE id = ?', [hash, u.id])
        await tx.run("UPDATE portal_sessions SET revoked_at = ?, revoked_reason = 'password-changed' WHERE user_id = ? AND revoked_at IS NULL", [now(), u.id])
      }),
    )
    return u
  }

  /**
   * Checks a password. Unknown users cost one scrypt too (against a fixed dummy hash), so the
   * answer time does not tell whether an account exists.
   */
  async verifyUser(email: string, password: string): Promise<UserRecord | undefined> {
    const r = await this.guard(() => this.sql.get<Record<string, unknown>>(`SELECT ${USER_COLS}, password_hash FROM users WHERE email = ?`, [email.toLowerCase()]))
    const ok = await verifyPassword(password, r ? String(r.password_hash) : await (dummyHash ??= hashPassword(randomBytes(24).toString('base64'))))
    if (!r || !ok || Number(r.active) !== 1) return undefined
    const t = now()
    // a login is the one moment the password is at hand: upgrade an older, cheaper hash then
    if (needsRehash(String(r.password_hash))) {
      const upgraded = await hashPassword(password)
      await this.guard(() => this.sql.run('UPDATE users SET password_hash = ?, last_login_at = ? WHERE id = ? AND password_hash = ?', [upgraded, t, Number(r.id), String(r.password_hash)]))
    } else {
      await this.guard(() => this.sql.run('UPDATE users SET last_login_at = ? WHERE id = ?', [t, Number(r.id)]))
    }
    return {...toUser(r), last_login_at: t}
  }

  // ---- audit ---------------------------------------------------------------------------------

  async audit(e: AuditEvent): Promise<void> {
    await this.guard(() =>
      this.sql.run('INSERT INTO audit_log (event_type, actor, identity, ip, event_data, severity, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)', [
        e.event_type, e.actor ?? null, e.identity ?? null, e.ip ?? null, e.data ? JSON.stringify(e.data) : null, e.severity ?? 'info', now(),
      ]),
    )
  }

  /** Newest first; `before` is the id of the last row of the previous page. */
  async auditLog(opts: number | {limit?: number; before?: number; type?: string; actor?: string} = {}): Promise<AuditRecord[]> {
    const o = typeof opts === 'number' ? {limit: opts} : opts
    const n = Math.max(1, Math.min(10_000, Math.trunc(o.limit ?? 100)))
    const where: string[] = []
    const params: (string | number)[] = []
    if (o.before !== undefined) where.push('id < ?'), params.push(o.before)
    if (o.type) where.push('event_type = ?'), params.push(o.type)
    if (o.actor) where.push('actor = ?'), params.push(o.actor)
    const rows = await this.guard(() =>
      this.sql.all<Record<string, unknown>>(`SELECT id, event_type, actor, identity, ip, event_data, severity, created_at FROM audit_log ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY id DESC LIMIT ${n}`, params),
    )
    return rows.map((r) => ({...(r as unknown as AuditRecord), id: Number(r.id)}))
  }

  /** How many events of a type a key (actor or ip) caused since a time: login rate limits. */
  async countEvents(type: string, key: 'actor' | 'ip', value: string, since: string): Promise<number> {
    const r = await this.guard(() => this.sql.get<{n: number}>(`SELECT COUNT(*) AS n FROM audit_log WHERE event_type = ? AND ${key} = ? AND created_at >= ?`, [type, value, since]))
    return Number(r?.n ?? 0)
  }
}

export type UserRecord = {
  id: number
  email: string
  role: UserRole
  client_id: string | null
  active: boolean
  created_at: string
  last_login_at: string | null
}

export type AuditRecord = {
  id: number
  event_type: string
  actor: string | null
  identity: string | null
  ip: string | null
  event_data: string | null
  severity: string
  created_at: string
}

const USER_COLS = 'id, email, role, client_id, active, created_at, last_login_at'
const toUser = (r: Record<string, unknown>): UserRecord => ({
  active: Number(r.active) === 1, client_id: (r.client_id as string) ?? null, created_at: String(r.created_at), email: String(r.email), id: Number(r.id), last_login_at: (r.last_login_at as string) ?? null, role: String(r.role) as UserRole,
})

function checkPassword(password: string): void {
  if (password.length < 8) throw new DataError('E_USER_PASSWORD', 'The password is shorter than 8 characters.', {hint: 'Try this: choose a password of 8 or more characters.'})
  if (password.length > 1024) throw new DataError('E_USER_PASSWORD', 'The password is longer than 1024 characters.')
}

function decodeCursor(cursor: string): {at: string; id: number} {
  const m = /^([0-9T:.Z-]{24})\|([0-9]{1,18})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'))
  if (!m) throw new DataError('E_CURSOR', 'The page cursor is not one this server handed out.', {details: {status: 400}, hint: 'Try this: start again without cursor.'})
  return {at: m[1], id: Number(m[2])}
}

/**
 * Password hashes: scrypt$N$r$p$salt$hash (base64), verified in constant time. New hashes use
 * OWASP's scrypt minimum, N=2^17 r=8 p=1 (128 MiB, about 0.3 s here). The parameters of a stored
 * row are read back, so verification accepts only a bounded range: a row with an absurd N, r or p
 * (a tampered or foreign row) is refused instead of tying up CPU and memory on every login.
 */
export const PASSWORD_SCRYPT = {N: 131_072, p: 1, r: 8} as const
const VERIFY_BOUNDS = {maxMem: 256 * 1024 * 1024, maxN: 1 << 20, maxP: 4, maxR: 16, minN: 1 << 14}

export async function hashPassword(password: string): Promise<string> {
  const {N, p, r} = PASSWORD_SCRYPT
  const salt = randomBytes(16)
  const h = await scryptAsync(password, salt, 32, {N, p, r})
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${h.toString('base64')}`
}

/** N, r, p, salt and hash of a stored row, or undefined when the row is malformed or out of bounds. */
function parseHash(stored: string): {N: number; r: number; p: number; salt: Buffer; hash: Buffer} | undefined {
  const f = stored.split('$')
  if (f.length !== 6 || f[0] !== 'scrypt' || ![f[1], f[2], f[3]].every((x) => /^[1-9]\d{0,7}$/.test(x))) return undefined
  const [N, r, p] = [Number(f[1]), Number(f[2]), Number(f[3])]
  const b = VERIFY_BOUNDS
  if (N < b.minN || N > b.maxN || (N & (N - 1)) !== 0 || r > b.maxR || p > b.maxP || 128 * N * r * p > b.maxMem) return undefined
  const salt = Buffer.from(f[4], 'base64')
  const hash = Buffer.from(f[5], 'base64')
  if (salt.length < 8 || salt.length > 64 || hash.length < 16 || hash.length > 64) return undefined
  return {N, hash, p, r, salt}
}

// what an unknown user's password is checked against (a hash of random bytes nobody knows), made on first use
let dummyHash: Promise<string> | undefined

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const h = parseHash(stored)
  if (!h) return false
  const got = await scryptAsync(password, h.salt, h.hash.length, {N: h.N, p: h.p, r: h.r})
  return timingSafeEqual(got, h.hash)
}

/**
 * scrypt off the event loop (libuv's thread pool), so a login of 0.3 s does not stall every other
 * request of the process; at most one per core at a time, which bounds the memory (128 MiB each)
 * and leaves pool threads for file and DNS work.
 */
const SCRYPT_SLOTS = Math.max(1, Math.min(4, availableParallelism()))
let scryptRunning = 0
const scryptWaiting: (() => void)[] = []

async function scryptAsync(password: string, salt: Buffer, keylen: number, o: {N: number; r: number; p: number}): Promise<Buffer> {
  if (scryptRunning >= SCRYPT_SLOTS) await new Promise<void>((go) => scryptWaiting.push(go))
  else scryptRunning++
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      scrypt(password, salt, keylen, {...o, maxmem: 128 * o.N * o.r * o.p + (1 << 20)}, (error, key) => (error ? reject(error) : resolve(key)))
    })
  } finally {
    // the slot passes straight to the next waiter, if any
    const next = scryptWaiting.shift()
    if (next) next()
    else scryptRunning--
  }
}

/** True when a (verified) stored hash is weaker than what hashPassword writes today. */
export function needsRehash(stored: string): boolean {
  const h = parseHash(stored)
  return !h || h.N < PASSWORD_SCRYPT.N || h.r < PASSWORD_SCRYPT.r || h.hash.length < 32
}
