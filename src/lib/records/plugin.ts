import type {Redis} from 'ioredis'
import {Counter, Histogram, Registry} from 'prom-client'

import type {ApiContext, ApiPlugin, ApiRequest, ApiResponse, ApiRoute, BrokerPublisher} from '../broker/api-types.js'
import type {HealthComponent} from '../health/index.js'
import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {MqError, PermissionError} from '../errors.js'
import {HttpError, errorBody, parseJsonObject, statusOf} from '../http/errors.js'
import {type Logger, silentLogger} from '../log.js'
import {CertificateAuthority} from '../pki/index.js'
import {PHONE_RE, assertBodyLength} from './crypto.js'
import {connectRedis, redisReady} from '../worker/keys.js'
import {CLIENT_STATUSES, MESSAGE_ID_RE, MESSAGE_STATUSES, type MessagePayload, type MessageRecord, RecordsStore, USER_ROLES} from './store.js'

/** The slice of the PKI's CertificateAuthority this plugin uses (structurally compatible). */
export interface CaLike {
  list(): {name: string; serial: string; type: string; notBefore: string; notAfter: string; status: string; revokedAt?: string; reason?: string; fingerprint: string}[]
  revoke(nameOrSerial: string, reason?: never): Promise<{name: string; serial: string}[]>
}

export interface RecordsPluginOptions {
  config: MqConfig
  home: MqHome
  publisher: BrokerPublisher
  logger?: Logger
  /** defaults to the CertificateAuthority under $MQ_HOME/pki, opened lazily */
  ca?: CaLike
  /** an already opened store (tests); else opened from config.store */
  store?: RecordsStore
}

/** What a delivered message looks like to consumers of the exchange. */
export interface DeliveredMessage extends MessagePayload {
  message_id: string
  client_id: string
  queued_at: string
}

/** broker statuses after delivery that a records view shows instead of "delivered" */
const BROKER_FINAL = new Set(['dead-lettered', 'expired', 'dropped', 'purged'])

const PROXY = ['proxy']
const WORKER = ['worker']
const ADMIN = ['admin']

function str(body: Record<string, unknown>, key: string, opts: {required?: boolean; max?: number} = {}): string | undefined {
  const v = body[key]
  if (v === undefined || v === null) {
    if (opts.required) throw new HttpError(422, 'E_FIELD_MISSING', `Field ${key} is required.`)
    return undefined
  }
  if (typeof v !== 'string') throw new HttpError(422, 'E_FIELD_TYPE', `Field ${key} must be a string.`)
  if (opts.max !== undefined && v.length > opts.max) throw new HttpError(422, 'E_FIELD_TOO_LONG', `Field ${key} is longer than ${opts.max} characters.`)
  return v
}

function int(v: unknown, key: string): number | undefined {
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new HttpError(422, 'E_FIELD_TYPE', `Field ${key} must be a non-negative integer.`)
  return v
}

function messageId(v: string | undefined): string {
  if (!v || !MESSAGE_ID_RE.test(v)) throw new HttpError(422, 'E_MESSAGE_ID', 'message_id must be 1-64 characters of [A-Za-z0-9._:-].')
  return v
}

const json = (status: number, body: unknown): ApiResponse => ({body, status})

/** A registration is late this long before the proxy's own deadline: the answer still has to reach it. */
const LATE_MARGIN_MS = 50

/**
 * The broker's records API: internal endpoints for the ingest pipeline (roles proxy and worker)
 * and operator endpoints (role admin). Mounted on the broker's mutual-TLS HTTPS API.
 */
export async function createRecordsPlugin(opts: RecordsPluginOptions): Promise<ApiPlugin & {store: RecordsStore}> {
  const log = (opts.logger ?? silentLogger).child('records')
  const store = opts.store ?? (await RecordsStore.open({config: opts.config, home: opts.home}))
  let ca = opts.ca
  const getCa = async (): Promise<CaLike> => {
    if (!ca) {
      ca = CertificateAuthority.open(opts.home, opts.config.pki) as unknown as CaLike
    }
    return ca
  }

  const registry = new Registry()
  const m = {
    delivered: new Counter({help: 'Messages delivered into the exchange, by client', labelNames: ['client_id'], name: 'mq_records_messages_delivered_total', registers: [registry]}),
    duplicates: new Counter({help: 'Deliveries the broker recognised as already published (e.g. retried after a crash before the record was marked)', name: 'mq_records_publish_duplicates_total', registers: [registry]}),
    failed: new Counter({help: 'Messages marked failed, by client', labelNames: ['client_id'], name: 'mq_records_messages_failed_total', registers: [registry]}),
    registered: new Counter({help: 'Messages registered by proxies, by client', labelNames: ['client_id'], name: 'mq_records_messages_registered_total', registers: [registry]}),
    storeSeconds: new Histogram({buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], help: 'Records store operation latency', labelNames: ['op'], name: 'mq_records_store_seconds', registers: [registry]}),
  }
  const timed = async <T>(op: string, fn: () => Promise<T>): Promise<T> => {
    const end = m.storeSeconds.startTimer({op})
    try {
      return await fn()
    } finally {
      end()
    }
  }

  // One delivery per message at a time (a reclaimed entry can race its slow first owner), and a
  // memory of messages already published whose "delivered" mark did not reach the store yet, so
  // a retry during a database outage records the delivery instead of publishing it twice. Across a
  // broker crash the broker's own publish deduplication (dedupe: true, see broker/dedupe.ts) does
  // that: the id is committed with the message, and settled once the mark is recorded.
  const inFlight = new Map<string, Promise<ApiResponse>>()
  const publishedUnrecorded = new Map<string, {queues: string[]}>()

  // "delivered" marks of concurrent deliveries share one store transaction
  let marks: {messageId: string; attempts?: number; resolve: (r: {changed: boolean; at: string}) => void; reject: (e: unknown) => void}[] = []
  const markDelivered = (messageId: string, attempts?: number) =>
    new Promise<{changed: boolean; at: string}>((resolve, reject) => {
      marks.push({attempts, messageId, reject, resolve})
      if (marks.length > 1) return
      setImmediate(() => {
        const batch = marks
        marks = []
        timed('deliver', () => store.markDeliveredMany(batch))
          .then((r) => batch.forEach((b, k) => b.resolve(r[k])))
          .catch((error) => batch.forEach((b) => b.reject(error)))
      })
    })

  type Found = {record: MessageRecord; payload: MessagePayload} | undefined
  const deliverOne = async (id: string, found: Found, exchange: string, routingKey: string, attempts: number | undefined): Promise<ApiResponse> => {
    if (!found) throw new HttpError(404, 'E_NOT_FOUND', `No message ${id} is registered.`)
    const {payload, record} = found
    if (record.status === 'delivered') {
      // recorded, so the broker need not remember the id (it may still, after a crash right after the mark)
      opts.publisher.settle?.(id)
      return json(200, {delivered_at: record.delivered_at, duplicate: true, message_id: id, status: 'delivered'})
    }
    if (record.status === 'failed') throw new HttpError(409, 'E_MESSAGE_FAILED', `Message ${id} was marked failed and dead-lettered; it is not delivered again.`)
    let queues = publishedUnrecorded.get(id)?.queues
    let alreadyPublished = false
    if (!queues) {
      const out: DeliveredMessage = {client_id: record.client_id, message_body: payload.message_body, message_id: id, metadata: payload.metadata ?? {}, queued_at: record.queued_at, sender_number: payload.sender_number}
      const r = await opts.publisher.publish(exchange, routingKey, Buffer.from(JSON.stringify(out)), {dedupe: true, headers: {'content-type': 'application/json', 'x-client-id': record.client_id}, messageId: id})
      queues = r.queues
      if (r.duplicate) {
        alreadyPublished = true
        m.duplicates.inc()
        log.info('delivery already published (retried after the broker restarted before recording it): recording it, not publishing again', {message_id: id})
      }
      publishedUnrecorded.set(id, {queues})
    }
    const done = await markDelivered(id, attempts)
    publishedUnrecorded.delete(id)
    opts.publisher.settle?.(id)
    if (done.changed) m.delivered.inc({client_id: record.client_id})
    return json(200, {delivered_at: done.changed ? done.at : record.delivered_at ?? done.at, duplicate: alreadyPublished || !done.changed, message_id: id, queues, status: 'delivered'})
  }

  /** Delivers several messages (one payload query), each at most once at a time. */
  const deliverMany = async (items: {id: string; attempts?: number}[], exchange: string, routingKey: string): Promise<ApiResponse[]> => {
    const fresh = items.filter((it) => !inFlight.has(it.id))
    const found = fresh.length ? await timed('payload', () => store.payloads([...new Set(fresh.map((it) => it.id))])) : new Map()
    return Promise.all(
      items.map(async (it) => {
        const running = inFlight.get(it.id)
        if (running) {
          const r = await running
          return {...r, body: {...(r.body as object), duplicate: true}}
        }
        const p = deliverOne(it.id, found.get(it.id), exchange, routingKey, it.attempts).catch((error) => ({body: errorBody(error), status: statusOf(error)}))
        inFlight.set(it.id, p)
        try {
          return await p
        } finally {
          inFlight.delete(it.id)
        }
      }),
    )
  }

  /**
   * A record's status as the operator should see it: once delivered into the broker, a message the
   * consumer rejected is dead-lettered (expired, dropped, purged) there, and `mq message list` must
   * say so as `mq message status` and `mq stats` do, not "delivered". broker_status is the broker's
   * latest status of the id (null when it no longer knows it).
   */
  const view = (r: MessageRecord) => {
    const b = r.status === 'delivered' ? (opts.publisher.status?.(r.message_id) ?? null) : null
    const gone = b !== null && BROKER_FINAL.has(b.status)
    return {
      attempts: r.attempts, broker_status: b?.status ?? null, client_id: r.client_id, delivered_at: r.delivered_at, key_version: r.key_version, last_attempt_at: r.last_attempt_at,
      last_error: r.last_error, message_id: r.message_id, queued_at: r.queued_at, ...(gone && b.queue ? {queue: b.queue} : {}), sender: r.sender_masked, sender_hash: r.sender_hash, status: gone ? b.status : r.status,
    }
  }

  const syncClients = async () => {
    const c = await getCa()
    for (const cert of c.list()) {
      if (cert.type !== 'client') continue
      await store.upsertClient({
        expires_at: cert.notAfter, fingerprint: cert.fingerprint, identity: cert.name, issued_at: cert.notBefore,
        reason: cert.reason ?? null, revoked_at: cert.revokedAt ?? null, serial: cert.serial,
        status: cert.status === 'revoked' ? 'revoked' : cert.status === 'expired' || Date.parse(cert.notAfter) < Date.now() ? 'expired' : 'active',
      })
    }
  }

  type Registration = Parameters<RecordsStore['register']>[0] & {serial?: string}
  const parseRegistration = (b: Record<string, unknown>): Registration => {
    const id = messageId(str(b, 'message_id', {required: true}))
    const clientId = str(b, 'client_id', {max: 255, required: true})!
    const sender = str(b, 'sender_number', {required: true})!
    if (!PHONE_RE.test(sender)) throw new HttpError(422, 'E_SENDER_NUMBER', 'sender_number must be an E.164 number like +4915200000000.')
    const body = str(b, 'message_body', {required: true})!
    assertBodyLength(body, opts.config.proxy.max_body_chars)
    if (body.trim() === '') throw new HttpError(422, 'E_BODY_BLANK', 'message_body is blank.')
    const metadata = b.metadata ?? undefined
    if (metadata !== undefined && (typeof metadata !== 'object' || Array.isArray(metadata))) throw new HttpError(422, 'E_FIELD_TYPE', 'metadata must be a JSON object.')
    const queuedAt = str(b, 'queued_at')
    if (queuedAt !== undefined && Number.isNaN(Date.parse(queuedAt))) throw new HttpError(422, 'E_FIELD_TYPE', 'queued_at must be an ISO-8601 time.')
    return {
      clientId, messageId: id, payload: {message_body: body, metadata: metadata as Record<string, unknown> | undefined, sender_number: sender},
      queuedAt: queuedAt ? new Date(queuedAt).toISOString() : undefined, serial: str(b, 'client_serial', {max: 64}),
    }
  }
  const errorResult = (e: unknown) => ({...errorBody(e), status: statusOf(e)})
  // "last seen" of client certificates, at most once a minute per serial (not a write per message)
  const touched = new Map<string, number>()
  const noteClients = (regs: Registration[]) => {
    const t = Date.now()
    for (const r of regs) {
      if (!r.serial || (touched.get(r.serial) ?? 0) > t - 60_000) continue
      touched.set(r.serial, t)
      store.touchClient(r.clientId, r.serial).catch((e) => log.warn('client touch failed', {error: e}))
    }
  }

  /**
   * The proxy sends how long it will still wait (deadline_ms) and answers 503 when that passes. A
   * registration the store commits after that moment (MySQL hung, then resumed) was not accepted:
   * it is answered as an error here too, and a record it created ends failed (NOT_ACCEPTED), never
   * queued for a delivery nobody was promised. A margin covers the answer's way back to the proxy.
   */
  const deadlineOf = (b: Record<string, unknown>, receivedAt: number): number | undefined => {
    const d = b.deadline_ms
    if (d === undefined || d === null) return undefined
    if (typeof d !== 'number' || !Number.isFinite(d) || d < 0) throw new HttpError(422, 'E_FIELD_TYPE', 'deadline_ms must be a non-negative number.')
    return receivedAt + d - LATE_MARGIN_MS
  }
  const lateError = () => new HttpError(503, 'E_REGISTER_LATE', 'The records store recorded the message after the proxy had stopped waiting; it was not accepted.', {hint: 'Try this: retry; with the same Idempotency-Key it is the same message.'})
  /** After the commit: registrations that finished late (the commit itself hung) are failed now. */
  const failLate = async (ids: string[]) => {
    if (!ids.length) return
    try {
      await store.markNotAccepted(ids, 'the records store answered after the proxy had answered 503')
    } catch (error) {
      // left queued: the worker's reconciler would deliver them (docs/pipeline.md, "Records of refused requests")
      log.warn('could not mark late registrations failed', {count: ids.length, error})
    }
  }

  const routes: ApiRoute[] = [
    {
      method: 'POST', path: '/internal/messages/register', roles: PROXY,
      async handler(req) {
        const receivedAt = Date.now()
        const b = parseJsonObject(req.body, req.headers['content-type'], false)
        const deadline = deadlineOf(b, receivedAt)
        // a batch {"messages": [...]} (what proxies send under load) or one message
        if (Array.isArray(b.messages)) {
          if (b.messages.length > 2000) throw new HttpError(413, 'E_BATCH_TOO_LARGE', 'At most 2000 messages per batch.')
          const parsed = b.messages.map((m) => {
            try {
              if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new HttpError(422, 'E_FIELD_TYPE', 'Each batch item must be a JSON object.')
              return parseRegistration(m as Record<string, unknown>)
            } catch (error) {
              return error as Error
            }
          })
          const ok = parsed.filter((p): p is Registration => !(p instanceof Error))
          const stored = await timed('register_batch', () => store.registerMany(ok, {deadline}))
          if (deadline !== undefined && Date.now() > deadline) {
            await failLate(stored.flatMap((r) => ('record' in r && r.created && !r.late ? [r.record.message_id] : [])))
            for (const r of stored) if ('record' in r) r.late = true
          }
          let k = 0
          const results = parsed.map((p) => {
            if (p instanceof Error) return errorResult(p)
            const r = stored[k++]
            if ('error' in r) return errorResult(r.error)
            if (r.late) return errorResult(lateError())
            if (r.created) m.registered.inc({client_id: r.record.client_id})
            return {client_id: r.record.client_id, created: r.created, message_id: r.record.message_id, queued_at: r.record.queued_at, status: r.record.status}
          })
          noteClients(ok)
          return json(200, {results})
        }
        const reg = parseRegistration(b)
        const r = await timed('register', () => store.register(reg))
        if (deadline !== undefined && Date.now() > deadline) {
          if (r.created) await failLate([reg.messageId])
          throw lateError()
        }
        if (r.created) {
          m.registered.inc({client_id: reg.clientId})
          noteClients([reg])
        }
        return json(r.created ? 201 : 200, {client_id: r.record.client_id, created: r.created, message_id: reg.messageId, queued_at: r.record.queued_at, status: r.record.status})
      },
    },
    {
      method: 'POST', path: '/internal/messages/deliver', roles: WORKER,
      async handler(req) {
        const b = parseJsonObject(req.body, req.headers['content-type'], false)
        const exchange = str(b, 'exchange', {max: 255}) ?? opts.config.worker.exchange
        const routingKey = str(b, 'routing_key', {max: 255}) ?? opts.config.worker.routing_key
        // a batch {"messages": [{"message_id", "attempts"}...]} (workers under load) or one message
        if (Array.isArray(b.messages)) {
          if (b.messages.length > 1000) throw new HttpError(413, 'E_BATCH_TOO_LARGE', 'At most 1000 messages per batch.')
          const items = b.messages.map((x) => {
            const o = (typeof x === 'object' && x !== null ? x : {}) as Record<string, unknown>
            try {
              return {attempts: int(o.attempts, 'attempts'), id: messageId(str(o, 'message_id', {required: true}))}
            } catch (error) {
              return error as Error
            }
          })
          const good = items.filter((x): x is {id: string; attempts: number | undefined} => !(x instanceof Error))
          const done = await deliverMany(good, exchange, routingKey)
          let k = 0
          const results = items.map((x) => {
            if (x instanceof Error) return {...errorBody(x), status: statusOf(x)}
            const r = done[k++]
            return r.status === 200 ? r.body : {...(r.body as object), message_id: x.id, status: r.status}
          })
          return json(200, {results})
        }
        const id = messageId(str(b, 'message_id', {required: true}))
        const [r] = await deliverMany([{attempts: int(b.attempts, 'attempts'), id}], exchange, routingKey)
        return r
      },
    },
    {
      // the worker's reconciler: records still waiting for delivery, queued before now - older_than_ms
      method: 'GET', path: '/internal/messages/undelivered', roles: WORKER,
      async handler(req) {
        const older = Number(req.query.get('older_than_ms') ?? NaN)
        if (!Number.isInteger(older) || older < 0) throw new HttpError(422, 'E_FIELD_TYPE', 'older_than_ms must be a non-negative integer.')
        const limit = Number(req.query.get('limit') ?? 1000)
        if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new HttpError(422, 'E_LIMIT', 'limit must be an integer 1..10000.')
        const cursor = req.query.get('after')
        let after: {at: string; id: number} | undefined
        if (cursor) {
          const mm = /^([0-9T:.Z-]{24})\|([0-9]{1,18})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'))
          if (!mm) throw new HttpError(400, 'E_CURSOR', 'after is not a cursor this endpoint handed out.')
          after = {at: mm[1], id: Number(mm[2])}
        }
        const {messages} = await timed('undelivered', () => store.undelivered({after, before: new Date(Date.now() - older).toISOString(), limit}))
        const last = messages.at(-1)
        const next = messages.length === limit && last ? Buffer.from(`${last.queued_at}|${last.id}`).toString('base64url') : null
        return json(200, {messages: messages.map(({id: _id, ...x}) => x), next})
      },
    },
    {
      method: 'PUT', path: '/internal/messages/:id/status', roles: [...WORKER, ...PROXY],
      async handler(req) {
        const id = messageId(req.params.id)
        const b = parseJsonObject(req.body, req.headers['content-type'], false)
        const status = str(b, 'status', {required: true})!
        if (!['queued', 'processing', 'failed'].includes(status)) throw new HttpError(422, 'E_STATUS', 'status must be queued, processing or failed (delivery goes through /internal/messages/deliver).')
        const attempts = int(b.attempts, 'attempts')
        const error = str(b, 'error', {max: 10_000})
        const r = await timed('status', () => store.setStatus(id, status as 'queued' | 'processing' | 'failed', {attempts, error}))
        if (r.changed && status === 'failed') m.failed.inc({client_id: r.record.client_id})
        return json(200, {attempts: r.record.attempts, changed: r.changed, last_attempt_at: r.record.last_attempt_at, message_id: id, status: r.record.status})
      },
    },
    // ---- operator API (admin role) ----
    {
      method: 'GET', path: '/admin/messages', roles: ADMIN,
      async handler(req) {
        const status = req.query.get('status') ?? undefined
        if (status && !(MESSAGE_STATUSES as readonly string[]).includes(status)) throw new HttpError(422, 'E_STATUS', `status must be one of ${MESSAGE_STATUSES.join(', ')}.`)
        const limit = Number(req.query.get('limit') ?? 50)
        if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new HttpError(422, 'E_LIMIT', 'limit must be an integer 1..10000.')
        const rows = await store.list({before: req.query.get('before') ?? undefined, client: req.query.get('client') ?? undefined, limit, status})
        return json(200, {messages: rows.map(view)})
      },
    },
    {
      method: 'GET', path: '/admin/messages/:id', roles: ADMIN,
      async handler(req, ctx) {
        const id = messageId(req.params.id)
        const decrypt = ['1', 'true', 'yes'].includes(req.query.get('decrypt') ?? '')
        if (!decrypt) {
          const r = await store.get(id)
          if (!r) throw new HttpError(404, 'E_NOT_FOUND', `No message ${id}.`)
          return json(200, view(r))
        }
        const found = await store.payload(id)
        if (!found) throw new HttpError(404, 'E_NOT_FOUND', `No message ${id}.`)
        // the audit row is written before any plaintext leaves: no record, no answer
        await store.audit({actor: ctx.identity, data: {message_id: id}, event_type: 'message.decrypt', identity: found.record.client_id, ip: ctx.remote, severity: 'warning'})
        return json(200, {...view(found.record), message_body: found.payload.message_body, metadata: found.payload.metadata ?? {}, sender_number: found.payload.sender_number})
      },
    },
    {
      method: 'GET', path: '/admin/clients', roles: ADMIN,
      async handler(req) {
        const status = req.query.get('status') ?? undefined
        if (status && !(CLIENT_STATUSES as readonly string[]).includes(status)) throw new HttpError(422, 'E_STATUS', `status must be one of ${CLIENT_STATUSES.join(', ')}.`)
        await syncClients().catch((e) => log.warn('could not sync clients from the CA', {error: e}))
        return json(200, {clients: await store.listClients({status})})
      },
    },
    {
      method: 'POST', path: '/admin/clients/:id/revoke', roles: ADMIN,
      async handler(req, ctx) {
        const b = req.body.length ? parseJsonObject(req.body, req.headers['content-type'], false) : {}
        const reason = str(b, 'reason', {max: 255}) ?? 'unspecified'
        const c = await getCa()
        let revoked
        try {
          revoked = await c.revoke(req.params.id, reason as never)
        } catch (error) {
          if (error instanceof MqError && /NOT_FOUND|UNKNOWN/.test(error.code)) throw new HttpError(404, error.code, error.message, {hint: error.hint})
          throw error
        }
        await syncClients()
        for (const r of revoked) await store.markClientRevoked(r.serial, reason)
        await store.audit({actor: ctx.identity, data: {reason, serials: revoked.map((r) => r.serial)}, event_type: 'client.revoke', identity: req.params.id, ip: ctx.remote, severity: 'warning'})
        return json(200, {reason, revoked: revoked.map((r) => ({identity: r.name, serial: r.serial}))})
      },
    },
    {
      method: 'GET', path: '/admin/records/stats', roles: ADMIN,
      async handler() {
        await syncClients().catch(() => {})
        return json(200, await store.stats())
      },
    },
    {
      method: 'GET', path: '/admin/users', roles: ADMIN,
      async handler() {
        return json(200, {users: await store.listUsers()})
      },
    },
    {
      method: 'POST', path: '/admin/users', roles: ADMIN,
      async handler(req, ctx) {
        const b = parseJsonObject(req.body, req.headers['content-type'], false)
        const role = str(b, 'role') ?? 'user'
        if (!(USER_ROLES as readonly string[]).includes(role)) throw new HttpError(422, 'E_ROLE', `role must be one of ${USER_ROLES.join(', ')}.`)
        const client = str(b, 'client', {max: 255}) ?? null
        const u = await store.createUser(str(b, 'email', {max: 255, required: true})!, str(b, 'password', {max: 1024, required: true})!, role as 'admin' | 'user', client)
        await store.audit({actor: ctx.identity, data: {client, email: u.email, role}, event_type: 'user.create', identity: client, ip: ctx.remote})
        return json(201, u)
      },
    },
    {
      method: 'DELETE', path: '/admin/users/:email', roles: ADMIN,
      async handler(req, ctx) {
        if (!(await store.deleteUser(req.params.email))) throw new HttpError(404, 'E_NOT_FOUND', `No user ${req.params.email}.`)
        await store.audit({actor: ctx.identity, data: {email: req.params.email}, event_type: 'user.delete', ip: ctx.remote})
        return json(200, {deleted: req.params.email})
      },
    },
    {
      method: 'POST', path: '/admin/users/:email/password', roles: ADMIN,
      async handler(req, ctx) {
        const b = parseJsonObject(req.body, req.headers['content-type'], false)
        const u = await store.setPassword(req.params.email, str(b, 'password', {max: 1024, required: true})!)
        if (!u) throw new HttpError(404, 'E_NOT_FOUND', `No user ${req.params.email}.`)
        await store.audit({actor: ctx.identity, data: {email: u.email}, event_type: 'user.password', ip: ctx.remote, severity: 'warning'})
        return json(200, {email: u.email, password_changed: true})
      },
    },
    {
      method: 'GET', path: '/admin/audit', roles: ADMIN,
      async handler(req) {
        const before = req.query.get('before')
        const events = await store.auditLog({actor: req.query.get('actor') ?? undefined, before: before ? Number(before) : undefined, limit: Number(req.query.get('limit') ?? 100) || 100, type: req.query.get('type') ?? undefined})
        return json(200, {events})
      },
    },
  ]

  // The broker itself never needs Redis; the ingest pipeline (proxy -> Redis -> worker) does. Once
  // a proxy or worker has called the internal API, /health also pings redis.url, as "degraded"
  // when it is down: the broker keeps serving, but ingest stalls (the proxy answers 503).
  let pipelineSeen = false
  let redis: Redis | undefined
  const redisHealth = async (): Promise<HealthComponent> => {
    redis ??= connectRedis(opts.config.redis.url, {commandTimeoutMs: 1000})
    const t = Date.now()
    try {
      await redisReady(redis, 1000)
      await redis.ping()
      return {latency_ms: Date.now() - t, status: 'ok'}
    } catch (error) {
      return {
        error: (error as Error).message,
        hint: 'Try this: start Redis or fix redis.url (MQ_REDIS_URL); proxies answer 503 and workers wait until it is back.',
        status: 'degraded',
      }
    }
  }

  // Every handler answers errors in the one JSON shape and is counted.
  const wrapped = routes.map((r) => ({
    ...r,
    async handler(req: ApiRequest, ctx: ApiContext): Promise<ApiResponse> {
      let res: ApiResponse
      try {
        if (r.roles && !r.roles.some((x) => ctx.roles.includes(x))) throw new PermissionError('E_FORBIDDEN', `Identity ${ctx.identity ?? '(none)'} lacks the ${r.roles.join(' or ')} role.`, {details: {status: 403}})
        res = await r.handler(req, ctx)
      } catch (error) {
        const status = statusOf(error)
        if (status >= 500) log.warn('records request failed', {error, path: req.path})
        res = {body: errorBody(error), status}
      }
      // requests are counted by the broker's API (mq_api_requests_total); here we only note that
      // the Redis pipeline is in use, so /health starts reporting Redis
      if (!pipelineSeen && res.status < 400 && r.path.startsWith('/internal/')) pipelineSeen = true
      return res
    },
  }))

  return {
    async close() {
      // let deliveries in progress record their outcome before the store goes away
      await Promise.allSettled([...inFlight.values()])
      redis?.disconnect()
      await store.close()
    },
    async components() {
      const out: Record<string, HealthComponent> = {}
      const t = Date.now()
      // a database that does not answer within 2 s is as good as down for a health check
      let timer: NodeJS.Timeout | undefined
      const sqlPing = Promise.race([
        timed('ping', () => store.sql.ping()),
        new Promise<never>((_r, reject) => {
          timer = setTimeout(() => reject(new Error('no answer within 2000 ms')), 2000)
        }),
      ]).finally(() => clearTimeout(timer))
      const [sqlResult, redisResult] = await Promise.allSettled([sqlPing, pipelineSeen ? redisHealth() : Promise.resolve(undefined)])
      out.store =
        sqlResult.status === 'fulfilled'
          ? {backend: store.sql.label, latency_ms: Date.now() - t, status: 'ok'}
          : {backend: store.sql.label, error: (sqlResult.reason as Error).message, hint: 'Try this: check that the database runs and store.url (MQ_STORE_URL) is right; registrations and deliveries fail until it is back.', status: 'failing'}
      if (redisResult.status === 'fulfilled' && redisResult.value) out.redis = redisResult.value
      return out
    },
    async metrics() {
      return registry.metrics()
    },
    name: 'records',
    routes: wrapped,
    store,
  }
}
