/**
 * Assembles a running broker: durable store, engine, the native mutual-TLS server, the HTTPS API
 * with the plugins its caller passes, the optional CipherMQ listener and CRL hot reload.
 */
import {join} from 'node:path'

import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {PermissionError} from '../errors.js'
import {checkOwnCertificates} from '../health/index.js'
import type {Logger} from '../log.js'
import {type MetricsListener, startMetricsListener} from '../http/metrics-listener.js'
import {handshakeLimits} from '../net/pending.js'
import {checkName} from '../util/names.js'
import {CrlWatcher, adoptCrl, crlOrder, ensureCrlAtStart, peerIdentity, serverTlsOptions, verifyIdentityCerts} from '../pki/index.js'
import {ApiServer} from './api.js'
import type {ApiPluginFactory, BrokerPublisher} from './api-types.js'
import type {BrokerEngine} from './backend.js'
import {CipherMqListener} from './ciphermq.js'
import {ClusterEngine} from './cluster/engine.js'
import {Engine} from './engine.js'
import {lockDataDir} from './lock.js'
import {BACKLOG_MESSAGES, HeapGrowthGovernor, resolveWatermark} from './memory.js'
import {type ResolvedPermissions, cipherMqPermissions, cipherMqReach, resolvePermissions} from './permissions.js'
import {BrokerServer, type KeyDirectory} from './server.js'
import {DurableStore, STORE_KEY_FILE} from './store.js'

export interface RunningBroker {
  engine: BrokerEngine
  /** standalone mode: the SQLite store */
  store?: DurableStore
  /** cluster mode: the Redis-backed queues */
  cluster?: ClusterEngine
  server: BrokerServer
  api: ApiServer
  ciphermq?: CipherMqListener
  ports: {messaging: number; api: number; ciphermq?: number}
  /** the loopback plain-HTTP /metrics (broker.metrics_port), when on */
  metricsUrl?: string
  publisher: BrokerPublisher
  close(): Promise<void>
}

/** An in-process publisher on the engine: resolves once the message is stored (durably when needed). */
export function enginePublisher(engine: BrokerEngine): BrokerPublisher {
  return {
    publish(exchange, routingKey, body, opts) {
      return new Promise((resolve, reject) => {
        try {
          const r = engine.publish(exchange, routingKey, body, opts)
          const done = (err?: Error) => (err ? reject(err) : resolve({messageId: r.messageId, queues: r.queues, ...(r.duplicate ? {duplicate: true} : {})}))
          if (r.durable && engine.store) engine.store.afterCommit(done)
          else done()
        } catch (error) {
          reject(error)
        }
      })
    },
    settle(messageId) {
      engine.settlePublished(messageId)
    },
    status(messageId) {
      const st = engine.messageStatus(messageId)
      // cluster mode answers from Redis, asynchronously: this synchronous view goes without it
      if (st instanceof Promise) return null
      return st ? {status: st.status, ...(st.queue ? {queue: st.queue} : {})} : null
    },
  }
}

interface KeyStore {
  getKey(name: string): {encCertPem: string; signCertPem: string} | null
  putKey(name: string, encCertPem: string, signCertPem: string): Promise<void>
}

function keyDirectory(home: MqHome, store: KeyStore): KeyDirectory {
  return {
    get: (name) => store.getKey(checkName(name)),
    put(name: string, encCertPem: string, signCertPem: string, by: ResolvedPermissions) {
      checkName(name)
      if (by.identity !== name && !by.admin) {
        throw new PermissionError('E_FORBIDDEN', `${by.identity} may not publish the key of ${name}`, {hint: `Try this: connect as ${name} (--identity ${name}) or as an admin`})
      }
      // only certificates our CA issued to that name (and not revoked) enter the directory
      verifyIdentityCerts(home, name, encCertPem, signCertPem)
      return store.putKey(name, encCertPem, signCertPem)
    },
  }
}

export interface StartOptions {
  host?: string
  port?: number
  apiHost?: string
  apiPort?: number
  /** the HTTPS API's plugins (e.g. the records API), built once the engine runs */
  plugins?: ApiPluginFactory[]
}

export async function startBroker(home: MqHome, config: MqConfig, logger: Logger, opts: StartOptions = {}): Promise<RunningBroker> {
  const b = config.broker
  // without pki/crl.pem every certificate the local CA revoked would be admitted
  await ensureCrlAtStart(home, config.pki, logger)
  // one broker per data directory, taken before the store opens
  const lock = lockDataDir(home.data)
  const heapGrowth = new HeapGrowthGovernor(b.heap_growing_percent, b.heap_growing_above).start()
  // before the cluster connects: a CRL shared by another node may arrive at once
  const crl = new CrlWatcher(home, b.crl_check_interval_ms)
  let store: DurableStore | undefined
  let cluster: ClusterEngine | undefined
  let engine: BrokerEngine
  // filled in once the listeners are up: what this node tells the rest of the cluster
  const nodeInfo: Record<string, unknown> = {}
  let connectionCount = () => 0
  try {
    if (b.cluster.url) {
      cluster = await ClusterEngine.connect({
        claimMs: b.cluster.claim_ms,
        dedupeMax: b.dedupe_max,
        dedupeWindowMs: b.dedupe_window_ms,
        deliveryLimit: b.delivery_limit,
        durability: b.cluster.durability,
        info: () => ({...nodeInfo, connections: connectionCount()}),
        logger: logger.child('cluster'),
        maxUnacked: b.max_unacked,
        name: b.cluster.name,
        onCrl: (pem) => takeClusterCrl(pem),
        url: b.cluster.url,
      })
      engine = cluster
    } else {
      // message bodies and headers are sealed at rest under secrets/broker.key (created on first start)
      store = new DurableStore(home.data, b.commit_interval_ms, {keyFile: join(home.secrets, STORE_KEY_FILE), logger: logger.child('store')})
      const standalone = new Engine({
        dedupeMax: b.dedupe_max,
        dedupeWindowMs: b.dedupe_window_ms,
        deliveryLimit: b.delivery_limit,
        flowHigh: b.flow_high,
        maxUnacked: b.max_unacked,
        memoryHighWatermark: resolveWatermark(b.memory_high_watermark),
        store,
        transientMaxBytes: b.transient_queue_max_bytes,
        transientOverflow: b.transient_overflow,
        windowBytes: b.queue_window_bytes,
        windowMessages: b.queue_window_messages,
      })
      engine = standalone
      // the heap cap is for a broker whose memory holds a backlog, not one merely busy (see HeapGrowthGovernor)
      heapGrowth.backlog = () => standalone.holdsBacklog(BACKLOG_MESSAGES)
    }
  } catch (error) {
    heapGrowth.stop()
    lock.release()
    throw error
  }
  if (engine instanceof Engine) {
    const e = engine
    e.memory.onChange = (m) => {
      if (m.alarm) logger.warn('memory high watermark reached: publishers are paused until memory use falls below it', {high_watermark: m.highWatermark, rss: m.rss})
      else logger.info('memory back under the high watermark: publishers resume', {high_watermark: m.highWatermark, rss: m.rss})
    }
  }
  engine.start()
  const keys: KeyStore = cluster ?? store!
  const permsCache = new Map<string, ResolvedPermissions>()
  const delivery = {queue: config.worker.delivery_queue, readers: config.worker.readers}
  const permissionsFor = (identity: string) => {
    let p = permsCache.get(identity)
    if (!p) permsCache.set(identity, (p = resolvePermissions(b.permissions, identity, delivery)))
    return p
  }
  // cluster mode: a CRL published on any node's home reaches every node, newest wins
  function takeClusterCrl(pem: Buffer): void {
    try {
      if (adoptCrl(home, pem)) {
        logger.info('took a newer CRL from the cluster')
        crl.poll()
      }
    } catch (error) {
      logger.warn('ignoring a CRL shared in the cluster: it is not a valid CRL of our CA', {error: (error as Error).message})
    }
  }
  const shareCrl = (pem: Buffer | undefined) => {
    if (!cluster || !pem) return
    cluster.shareCrl(pem, crlOrder(pem)).catch((error) => logger.warn('sharing the CRL with the cluster failed', {error: (error as Error).message}))
  }
  if (cluster) {
    const shared = await cluster.sharedCrl().catch(() => undefined)
    if (shared) takeClusterCrl(shared.pem)
    shareCrl(crl.current())
  }
  const isRevoked = (serial: string) => crl.revoked().has(serial)
  const tlsOpts = serverTlsOptions(home, b.identity)
  checkOwnCertificates(home, [b.identity], logger)
  const server = new BrokerServer({
    engine,
    isRevoked,
    keys: keyDirectory(home, keys),
    limits: {handshakeTimeoutMs: b.handshake_timeout_ms, heartbeatMs: b.heartbeat_ms, maxConnections: b.max_connections, maxHandshakes: b.max_handshakes, maxHandshakesPerSource: b.max_handshakes_per_source, maxPayload: b.max_payload, maxUnconfirmed: b.max_unconfirmed},
    logger: logger.child('server'),
    peer: peerIdentity,
    permissionRules: b.permissions,
    permissionsFor,
    tls: tlsOpts,
  })
  connectionCount = () => server.connections.size
  const publisher = enginePublisher(engine)
  const pluginCtx = {config, home, logger: logger.child('api'), publisher}
  const plugins = []
  for (const make of opts.plugins ?? []) plugins.push(await make(pluginCtx))
  const api = new ApiServer({
    connections: () => server.connections.size,
    engine,
    handshakes: handshakeLimits(b),
    home,
    identity: b.identity,
    isRevoked,
    logger: logger.child('api'),
    maxBody: b.max_payload,
    memoryWatermarkBytes: b.memory_watermark_bytes,
    permissionsFor,
    plugins,
    tls: tlsOpts,
  })
  crl.on('change', (_pem: Buffer, revoked: Set<string>) => {
    try {
      const next = serverTlsOptions(home, b.identity)
      server.setSecureContext(next)
      api.setSecureContext(next)
      const dropped = server.dropRevoked(revoked)
      logger.info('CRL reloaded', {dropped, revoked: revoked.size})
      shareCrl(_pem)
    } catch (error) {
      logger.error('CRL reload failed; the previous TLS context stays in force', {error})
    }
  })
  crl.on('invalid', (error: Error) => logger.warn('ignoring an invalid CRL', {error: error.message}))
  crl.start()

  const ports: RunningBroker['ports'] = {api: 0, messaging: 0}
  let ciphermq: CipherMqListener | undefined
  let metrics: MetricsListener | undefined
  try {
    ports.messaging = await server.listen(opts.port ?? b.port, opts.host ?? b.host)
    ports.api = await api.listen(opts.apiPort ?? b.api_port, opts.apiHost ?? b.api_host)
    Object.assign(nodeInfo, {api: `${opts.apiHost ?? b.api_host}:${ports.api}`, messaging: `${opts.host ?? b.host}:${ports.messaging}`})
    if (b.ciphermq.enabled) {
      const perms = cipherMqPermissions(b.permissions, b.ciphermq, delivery)
      ciphermq = new CipherMqListener({afterCommit: (cb) => engine.store!.afterCommit(cb), engine, idleTimeoutMs: b.ciphermq.idle_timeout_ms, lineTimeoutMs: b.ciphermq.line_timeout_ms, logger: logger.child('ciphermq'), maxConnections: b.ciphermq.max_connections, maxLine: b.ciphermq.max_line, perms})
      ports.ciphermq = await ciphermq.listen(b.ciphermq.port, b.ciphermq.host)
      // an unauthenticated door: say at every start what it opens onto
      logger.warn(cipherMqReach(b.permissions, b.ciphermq, `${b.ciphermq.host}:${ports.ciphermq}`))
    }
    if (b.metrics_port > 0) metrics = await startMetricsListener({flag: 'broker.metrics_port (MQ_BROKER_METRICS_PORT)', port: b.metrics_port, text: () => api.metricsText()})
  } catch (error) {
    crl.stop()
    await ciphermq?.close().catch(() => {})
    engine.stop()
    await server.close().catch(() => {})
    await api.close().catch(() => {})
    await store?.close()
    await cluster?.close()
    heapGrowth.stop()
    lock.release()
    throw error
  }
  let closed = false
  return {
    api,
    async close() {
      if (closed) return
      closed = true
      crl.stop()
      // native connections first and gracefully: in-flight publishes are committed and confirmed
      await server.close(b.stop_timeout_ms)
      engine.stop()
      await Promise.all([api.close(), ciphermq?.close(), metrics?.close()])
      await store?.close()
      await cluster?.close()
      heapGrowth.stop()
      lock.release()
    },
    ciphermq,
    cluster,
    engine,
    metricsUrl: metrics?.url,
    ports,
    publisher,
    server,
    store,
  }
}
