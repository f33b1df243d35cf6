import {Flags} from '@oclif/core'

import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {ApiClient} from '../http/client.js'
import {clientTlsOptions} from '../pki/index.js'
import type {AuditRecord, ClientRecord, RecordsStats, UserRecord} from '../records/store.js'

/** Flags of operator commands that talk to the broker's HTTPS API. */
export const apiFlags = {
  api: Flags.string({description: "the broker's HTTPS API [default: client.api, else https://broker.api_host:broker.api_port of this home]", env: 'MQ_API', helpGroup: 'API'}),
  identity: Flags.string({description: 'admin identity: uses $MQ_HOME/pki/issued/NAME.crt|.key [default: client.identity, admin]', env: 'MQ_IDENTITY', helpGroup: 'API'}),
}

export interface MessageView {
  message_id: string
  client_id: string
  sender: string
  sender_hash: string
  /** queued, processing, delivered, failed; or the broker's dead-lettered, expired, dropped, purged once it left the queue it was delivered to */
  status: string
  /** the broker's latest status of a delivered message (null: not delivered, or no longer known) */
  broker_status?: string | null
  /** where a dead-lettered message is now */
  queue?: string
  attempts: number
  last_error: string | null
  key_version: number
  queued_at: string
  delivered_at: string | null
  last_attempt_at: string | null
  message_body?: string
  sender_number?: string
  metadata?: Record<string, unknown>
}

/**
 * Operator queries over the broker's records API (admin role). Only the broker holds database
 * credentials; operators hold an admin client certificate.
 */
export class AdminApi {
  readonly client: ApiClient

  constructor(home: MqHome, config: MqConfig, flags: {api?: string; identity?: string} = {}) {
    this.client = new ApiClient(flags.api ?? config.client.api, clientTlsOptions(home, flags.identity ?? config.client.identity), config.client.timeout_ms)
  }

  close(): void {
    this.client.close()
  }

  async messages(q: {client?: string; status?: string; limit?: number}): Promise<MessageView[]> {
    const p = new URLSearchParams()
    if (q.client) p.set('client', q.client)
    if (q.status) p.set('status', q.status)
    if (q.limit) p.set('limit', String(q.limit))
    return (await this.client.call<{messages: MessageView[]}>('GET', `/admin/messages?${p}`)).messages
  }

  message(id: string, decrypt = false): Promise<MessageView> {
    return this.client.call('GET', `/admin/messages/${encodeURIComponent(id)}${decrypt ? '?decrypt=1' : ''}`)
  }

  async clients(status?: string): Promise<ClientRecord[]> {
    return (await this.client.call<{clients: ClientRecord[]}>('GET', `/admin/clients${status ? `?status=${encodeURIComponent(status)}` : ''}`)).clients
  }

  revoke(id: string, reason: string): Promise<{reason: string; revoked: {identity: string; serial: string}[]}> {
    return this.client.call('POST', `/admin/clients/${encodeURIComponent(id)}/revoke`, {reason})
  }

  stats(): Promise<RecordsStats> {
    return this.client.call('GET', '/admin/records/stats')
  }

  async users(): Promise<UserRecord[]> {
    return (await this.client.call<{users: UserRecord[]}>('GET', '/admin/users')).users
  }

  createUser(email: string, password: string, role: string, client?: string): Promise<UserRecord> {
    return this.client.call('POST', '/admin/users', {email, password, role, ...(client ? {client} : {})})
  }

  setPassword(email: string, password: string): Promise<{email: string; password_changed: boolean}> {
    return this.client.call('POST', `/admin/users/${encodeURIComponent(email)}/password`, {password})
  }

  async audit(q: {limit?: number; type?: string; actor?: string} = {}): Promise<AuditRecord[]> {
    const p = new URLSearchParams()
    if (q.limit) p.set('limit', String(q.limit))
    if (q.type) p.set('type', q.type)
    if (q.actor) p.set('actor', q.actor)
    return (await this.client.call<{events: AuditRecord[]}>('GET', `/admin/audit?${p}`)).events
  }

  deleteUser(email: string): Promise<{deleted: string}> {
    return this.client.call('DELETE', `/admin/users/${encodeURIComponent(email)}`)
  }
}

/** Runs fn with an AdminApi and always closes it. */
export async function withAdminApi<T>(home: MqHome, config: MqConfig, flags: {api?: string; identity?: string}, fn: (a: AdminApi) => Promise<T>): Promise<T> {
  const a = new AdminApi(home, config, flags)
  try {
    return await fn(a)
  } finally {
    a.close()
  }
}
