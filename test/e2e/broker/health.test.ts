/**
 * What an operator sees of a running broker's health and figures: GET /health (HTTP status and
 * components), `mq broker health` (exit codes), GET /metrics (one family per concept) and
 * `mq stats` with the records figures.
 */
import assert from 'node:assert/strict'
import {createPrivateKey} from 'node:crypto'
import {readFileSync, writeFileSync} from 'node:fs'
import {after, before, describe, it} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {loadConfig} from '../../../src/lib/config/load.js'
import {ApiClient} from '../../../src/lib/http/client.js'
import {CertificateAuthority, clientTlsOptions} from '../../../src/lib/pki/index.js'
import {buildCrl} from '../../../src/lib/pki/certs.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {freePort, uniqueName} from '../../helpers/services.js'

describe('broker health, metrics and stats', () => {
  let broker: BrokerProcess
  let home: MqHome
  let env: NodeJS.ProcessEnv
  const clients: ApiClient[] = []
  const api = (identity?: string) => {
    const c = new ApiClient(`https://127.0.0.1:${broker.apiPort}`, identity ? clientTlsOptions(home, identity) : {ca: readFileSync(home.caCert)}, 10_000, 4)
    clients.push(c)
    return c
  }
  const mq = (args: string[]) => runCli(args, {env})

  before(async () => {
    // Redis on a port nothing listens on: the broker must report it only once the pipeline uses it
    const deadRedis = await freePort()
    broker = await spawnBroker({env: {MQ_REDIS_URL: `redis://127.0.0.1:${deadRedis}`}})
    home = new MqHome(broker.home)
    env = {...broker.cliEnv(), MQ_API: `https://127.0.0.1:${broker.apiPort}`, MQ_REDIS_URL: `redis://127.0.0.1:${deadRedis}`}
    const {config} = loadConfig({home: broker.home})
    const ca = CertificateAuthority.open(home, config.pki)
    await ca.issue('proxy', {type: 'client'})
    await ca.issue('worker', {type: 'client'})
  })

  after(async () => {
    for (const c of clients) c.close()
    await broker?.cleanup()
  })

  it('a fresh broker is ok: HTTP 200 without a certificate, mq broker health exits 0', async () => {
    const anon = await api().request<Record<string, any>>('GET', '/health')
    assert.equal(anon.status, 200)
    assert.deepEqual(anon.body.components.store, {status: 'ok'}, 'without a certificate: the verdicts only')
    // the details are for the monitor right (admin has it)
    const r = await api('admin').request<Record<string, any>>('GET', '/health')
    assert.equal(r.status, 200)
    assert.equal(r.body.status, 'ok')
    assert.deepEqual(Object.keys(r.body.components).sort(), ['crl', 'engine', 'store'])
    assert.equal(r.body.components.store.status, 'ok')
    assert.equal(typeof r.body.components.store.latency_ms, 'number')
    assert.match(r.body.components.store.backend, /^sqlite/)
    assert.equal(r.body.components.crl.status, 'ok')
    assert.ok(Date.parse(r.body.components.crl.next_update) > Date.now())

    const cli = await mq(['broker', 'health', '--json'])
    assert.equal(cli.code, 0, cli.stderr)
    const h = JSON.parse(cli.stdout)
    assert.equal(h.status, 'ok')
    assert.equal(h.components.store.status, 'ok')
    const human = await mq(['broker', 'health'])
    assert.equal(human.code, 0, human.stderr)
    assert.match(human.stdout, /: ok/)
    assert.match(human.stdout, /store\s+ok/)
  })

  it('/metrics has one family per concept: requests, messages by client, queue depths, store latency', async () => {
    const proxy = api('proxy')
    const worker = api('worker')
    const ids = [uniqueName('m1'), uniqueName('m2')]
    for (const id of ids) {
      const r = await proxy.request('POST', '/internal/messages/register', {client_id: 'alice', message_body: 'hello', message_id: id, sender_number: '+4915200000000'})
      assert.equal(r.status, 201, JSON.stringify(r.body))
    }
    const d = await worker.request('POST', '/internal/messages/deliver', {message_id: ids[0]})
    assert.equal(d.status, 200, JSON.stringify(d.body))
    const f = await worker.request('PUT', `/internal/messages/${ids[1]}/status`, {attempts: 3, error: 'always fails', status: 'failed'})
    assert.equal(f.status, 200, JSON.stringify(f.body))

    assert.equal((await api().request('GET', '/metrics')).status, 401)
    const m = await api('admin').request<string>('GET', '/metrics')
    assert.equal(m.status, 200)
    const text = m.body
    for (const family of ['mq_api_requests_total', 'mq_records_messages_registered_total', 'mq_records_messages_delivered_total', 'mq_records_messages_failed_total', 'mq_queue_messages', 'mq_records_store_seconds']) {
      assert.match(text, new RegExp(`^# TYPE ${family} `, 'm'), `family ${family} is missing`)
    }
    assert.match(text, /^mq_api_requests_total\{method="POST",route="\/internal\/messages\/register",status="201"\} 2$/m)
    assert.match(text, /^mq_records_messages_registered_total\{client_id="alice"\} 2$/m)
    assert.match(text, /^mq_records_messages_delivered_total\{client_id="alice"\} 1$/m)
    assert.match(text, /^mq_records_messages_failed_total\{client_id="alice"\} 1$/m)
    assert.match(text, /^mq_queue_messages\{queue="default_queue"\} 1$/m)
    assert.match(text, /^mq_records_store_seconds_count\{op="register"\} 2$/m)
    // the old records-only request counter is gone (mq_api_requests_total counts every route)
    assert.doesNotMatch(text, /mq_records_requests_total/)
  })

  it('mq stats shows the records figures next to the engine figures', async () => {
    const j = await mq(['stats', '--json'])
    assert.equal(j.code, 0, j.stderr)
    const s = JSON.parse(j.stdout)
    assert.ok(Array.isArray(s.queues), 'the engine figures are still there')
    assert.equal(typeof s.uptime_ms, 'number')
    assert.equal(s.records.messages.total, 2)
    assert.equal(s.records.messages.delivered, 1)
    assert.equal(s.records.messages.failed, 1)
    assert.equal(s.records.messages.last_24h, 2)
    assert.equal(s.records.messages.last_7d, 2)
    assert.equal(typeof s.records.clients.active, 'number')
    assert.equal(typeof s.records.clients.revoked, 'number')
    const h = await mq(['stats'])
    assert.equal(h.code, 0, h.stderr)
    assert.match(h.stdout, /records messages total 2 {2}queued 0 {2}delivered 1 {2}failed 1 {2}last 24h 2 {2}last 7d 2/)
    assert.match(h.stdout, /records clients total \d+ {2}active \d+ {2}revoked \d+/)
  })

  it('mq stats without a reachable records API still prints the engine figures, with records null', async () => {
    const j = await runCli(['stats', '--json'], {env: {...env, MQ_API: `https://127.0.0.1:${await freePort()}`}})
    assert.equal(j.code, 0, j.stderr)
    const s = JSON.parse(j.stdout)
    assert.ok(Array.isArray(s.queues))
    assert.equal(s.records, null)
  })

  it('once the pipeline uses the broker, an unreachable Redis makes it degraded (HTTP 200, exit 0 with a warning)', async () => {
    const r = await api().request<Record<string, any>>('GET', '/health')
    assert.equal(r.status, 200)
    assert.equal(r.body.status, 'degraded')
    assert.equal(r.body.components.redis.status, 'degraded')
    assert.match(r.body.components.redis.hint, /^Try this: /)
    assert.equal(r.body.components.store.status, 'ok')
    const cli = await mq(['broker', 'health'])
    assert.equal(cli.code, 0, cli.stderr)
    assert.match(cli.stdout, /redis\s+degraded/)
    assert.match(cli.stderr, /degraded \(redis\)/)
  })

  it('an expired CRL makes the broker failing: HTTP 503, mq broker health exits 69 and says handshakes are refused', async () => {
    const day = 86_400_000
    const pem = await buildCrl({
      caCertPem: readFileSync(home.caCert, 'utf8'),
      caKey: createPrivateKey(readFileSync(home.caKey)),
      entries: [],
      nextUpdate: new Date(Date.now() - 60_000),
      number: 1000,
      thisUpdate: new Date(Date.now() - day),
    })
    writeFileSync(home.crl, pem)
    const r = await api().request<Record<string, any>>('GET', '/health')
    assert.equal(r.status, 503)
    assert.equal(r.body.status, 'failing')
    assert.equal(r.body.components.crl.status, 'failing')
    assert.match(r.body.components.crl.hint, /^Try this: mq cert crl/)
    assert.match(r.body.components.crl.hint, /refuse handshakes/)
    const j = await mq(['broker', 'health', '--json'])
    assert.equal(j.code, 69)
    assert.equal(JSON.parse(j.stdout).status, 'failing', j.stdout + j.stderr)
    const h = await mq(['broker', 'health'])
    assert.equal(h.code, 69)
    assert.match(h.stdout, /crl\s+failing/)
    assert.match(h.stderr, /failing \(crl/)
    // what the hint warns about: mutual-TLS clients now refuse the handshake, with a hint saying why
    const s = await mq(['stats', 'records', '--json'])
    assert.equal(s.code, 69)
    assert.equal(JSON.parse(s.stdout).error.code, 'E_CRL_EXPIRED')
  })

  it('mq broker health exits 69 when nothing answers', async () => {
    const r = await runCli(['broker', 'health', '--json'], {env: {...env, MQ_API: `https://127.0.0.1:${await freePort()}`}})
    assert.equal(r.code, 69)
    assert.equal(JSON.parse(r.stdout).error.code, 'E_API_UNAVAILABLE')
  })
})
