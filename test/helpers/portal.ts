import type {FastifyInstance} from 'fastify'

import {MqHome} from '../../src/lib/config/home.js'
import {configSchema, type MqConfig} from '../../src/lib/config/schema.js'
import {buildPortalApp, type BrokerStatsSource} from '../../src/lib/portal/app.js'
import {portalCa} from '../../src/lib/portal/ca.js'
import {TokenService, loadSigningKey} from '../../src/lib/portal/tokens.js'
import {CertificateAuthority} from '../../src/lib/pki/index.js'
import {RecordsStore} from '../../src/lib/records/store.js'
import {spawnUntilReady} from './cli.js'
import {tempHome} from './home.js'
import {freePort} from './services.js'
import {testPki} from './pki.js'

export const PASSWORD = 'correct horse battery'

export interface PortalFixture {
  app: FastifyInstance
  store: RecordsStore
  home: MqHome
  ca: CertificateAuthority
  config: MqConfig
  /** logs in through the API; returns the token pair */
  login(email: string, password?: string, ip?: string): Promise<{access_token: string; refresh_token: string}>
  /** inject() with a bearer token */
  call(method: 'GET' | 'POST' | 'DELETE', url: string, token?: string, body?: unknown): Promise<{status: number; json: any; headers: Record<string, unknown>}>
  cleanup(): Promise<void>
}

/**
 * The portal app (fastify, no listener: inject()) on a temp MQ_HOME with a real CA and a real
 * records store (SQLite, or MySQL with `url`), seeded with an admin and two users of two clients.
 */
export async function portalFixture(opts: {url?: string; portal?: Partial<MqConfig['portal']>; broker?: BrokerStatsSource} = {}): Promise<PortalFixture> {
  const h = tempHome('mq-portal-')
  const {ca, home} = await testPki(h.dir)
  const config = configSchema.parse({portal: opts.portal ?? {}, store: {url: opts.url ?? 'sqlite'}})
  const store = await RecordsStore.open({config, home})
  await store.createUser('admin@example.com', PASSWORD, 'admin')
  await store.createUser('alice@acme.example', PASSWORD, 'user', 'acme')
  await store.createUser('bob@globex.example', PASSWORD, 'user', 'globex')
  const tokens = new TokenService(store, loadSigningKey(home), {accessS: config.portal.access_ttl_s, refreshS: config.portal.refresh_ttl_s})
  const app = await buildPortalApp({broker: opts.broker, ca: portalCa(ca, store), config, store, tokens})
  const call: PortalFixture['call'] = async (method, url, token, body) => {
    const r = await app.inject({
      headers: {...(token ? {authorization: `Bearer ${token}`} : {}), ...(body === undefined ? {} : {'content-type': 'application/json'})},
      method,
      payload: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      url,
    })
    let json: unknown
    try {
      json = r.json()
    } catch {
      json = r.body
    }
    return {headers: r.headers as Record<string, unknown>, json, status: r.statusCode}
  }
  return {
    app,
    ca,
    call,
    async cleanup() {
      await app.close()
      await store.close()
      h.cleanup()
    },
    config,
    home,
    async login(email, password = PASSWORD, ip = '127.0.0.1') {
      const r = await app.inject({method: 'POST', payload: {email, password}, remoteAddress: ip, url: '/portal/auth/login'})
      if (r.statusCode !== 200) throw new Error(`login ${email}: ${r.statusCode} ${r.body}`)
      return r.json()
    },
    store,
  }
}

/** Registers `n` messages for a client, queued one second apart (oldest first). */
export async function seedMessages(store: RecordsStore, client: string, n: number, start = Date.parse('2026-01-01T00:00:00Z')): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < n; i++) {
    const id = `${client}-${String(i).padStart(4, '0')}`
    await store.register({clientId: client, messageId: id, payload: {message_body: `hello ${i} from ${client}`, sender_number: `+49152000${String(i).padStart(5, '0')}`}, queuedAt: new Date(start + i * 1000).toISOString()})
    ids.push(id)
  }
  return ids
}

export interface PortalProcess {
  url: string
  port: number
  log(): string
  stop(): Promise<void>
}

/** Spawns `mq portal start` on a free port for a home (the broker's API at apiPort) and waits for "portal ready". */
export async function spawnPortal(opts: {home: string; apiPort: number; env?: NodeJS.ProcessEnv; args?: string[]}): Promise<PortalProcess> {
  const port = await freePort()
  const p = await spawnUntilReady(['portal', 'start', '--home', opts.home, '--port', String(port), '--api', `https://127.0.0.1:${opts.apiPort}`, ...(opts.args ?? [])], opts.env ?? {}, 'portal ready')
  return {log: p.log, port, stop: p.stop, url: `https://127.0.0.1:${port}`}
}
