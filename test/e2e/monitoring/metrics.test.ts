import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {startMetricsListener} from '../../../src/lib/http/metrics-listener.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {ROOT, spawnUntilReady} from '../../helpers/cli.js'
import {type PortalProcess, spawnPortal} from '../../helpers/portal.js'
import {freePort, uniqueName} from '../../helpers/services.js'

const MON = join(ROOT, 'monitoring')

function promtool(): string | undefined {
  try {
    execFileSync('promtool', ['--version'], {stdio: 'ignore'})
    return 'promtool'
  } catch {
    if (process.env.CI) throw new Error('promtool is missing: .ci/run installs Debian\'s prometheus package')
    return undefined
  }
}

describe('monitoring kit: promtool accepts the config and the rules', {skip: promtool() ? false : 'promtool is not installed here (apt-get install -y prometheus); CI installs it'}, () => {
  it('promtool check config monitoring/prometheus.yml (with its rule file)', () => {
    const out = execFileSync('promtool', ['check', 'config', join(MON, 'prometheus.yml')], {encoding: 'utf8'})
    assert.match(out, /SUCCESS: 1 rule files found/)
  })
  it('promtool check rules monitoring/alerts.yml', () => {
    const out = execFileSync('promtool', ['check', 'rules', join(MON, 'alerts.yml')], {encoding: 'utf8'})
    assert.match(out, /SUCCESS: \d+ rules found/)
  })
})

/** Metric family names of a /metrics text (from its # TYPE lines). */
const families = (text: string) => [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1])

describe('monitoring kit: every metric a rule or a dashboard panel uses is served by broker, proxy, worker or portal', () => {
  let broker: BrokerProcess
  let portal: PortalProcess
  let proxy: Awaited<ReturnType<typeof spawnUntilReady>> | undefined
  let worker: Awaited<ReturnType<typeof spawnUntilReady>> | undefined
  const ports: Record<string, number> = {}
  before(async () => {
    for (const k of ['broker', 'proxy', 'worker', 'portal']) ports[k] = await freePort()
    broker = await spawnBroker({env: {MQ_BROKER_METRICS_PORT: String(ports.broker)}})
    const env = {MQ_API: `https://127.0.0.1:${broker.apiPort}`, MQ_HOME: broker.home, MQ_REDIS_KEY_PREFIX: `${uniqueName('mqmon')}:`}
    proxy = await spawnUntilReady(['proxy', 'start', '--port', String(await freePort())], {...env, MQ_PROXY_METRICS_PORT: String(ports.proxy)}, 'proxy ready')
    worker = await spawnUntilReady(['worker', 'start', '--metrics-port', String(ports.worker)], env, 'worker ready')
    portal = await spawnPortal({apiPort: broker.apiPort, args: ['--metrics-port', String(ports.portal)], home: broker.home})
  })
  after(async () => {
    await Promise.all([proxy?.stop(), worker?.stop(), portal?.stop()])
    await broker?.cleanup()
  })

  it('serves plain-HTTP /metrics on 127.0.0.1 without a client certificate, and covers every name in alerts.yml and grafana/mq.json', async () => {
    const served = new Set<string>()
    for (const [what, port] of Object.entries(ports)) {
      const r = await fetch(`http://127.0.0.1:${port}/metrics`)
      assert.equal(r.status, 200, what)
      const names = families(await r.text())
      assert.ok(names.length > 0, `${what} serves metrics`)
      for (const n of names) served.add(n)
    }
    const used = new Set<string>()
    const rules = readFileSync(join(MON, 'alerts.yml'), 'utf8')
    for (const m of rules.matchAll(/expr: (.*)/g)) for (const n of m[1].matchAll(/\bmq_[a-z0-9_]+/g)) used.add(n[0])
    const dashboard = JSON.parse(readFileSync(join(MON, 'grafana', 'mq.json'), 'utf8')) as {panels: {targets: {expr: string}[]}[]}
    for (const p of dashboard.panels) for (const t of p.targets) for (const n of t.expr.matchAll(/\bmq_[a-z0-9_]+/g)) used.add(n[0])
    assert.ok(used.size > 20, `${used.size} metric names used`)
    const missing = [...used].filter((n) => !served.has(n) && !served.has(n.replace(/_(bucket|sum|count)$/, '')))
    assert.deepEqual(missing, [], 'metrics used by rules/panels that no server exports')
    for (const n of ['mq_certificate_expiry_seconds', 'mq_crl_next_update_timestamp_seconds', 'mq_broker_memory_watermark_bytes']) assert.ok(served.has(n), n)
  })

  it('the plain listener binds to loopback only', async () => {
    await assert.rejects(startMetricsListener({flag: '--x', host: '0.0.0.0', port: 0, text: async () => ''}), (e: Error & {code?: string}) => e.code === 'E_METRICS_HOST')
    const l = await startMetricsListener({flag: '--x', port: 0, text: async () => '# TYPE a counter\n'})
    assert.match(l.url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/)
    assert.equal((await fetch(l.url.replace('/metrics', '/other'))).status, 404)
    await l.close()
  })
})
