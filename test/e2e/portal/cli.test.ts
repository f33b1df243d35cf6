import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {request} from 'node:https'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {type PortalProcess, spawnPortal} from '../../helpers/portal.js'

/** A real HTTPS call that trusts only our CA. */
function https(url: string, ca: Buffer, opts: {method?: string; body?: unknown; token?: string; cert?: string; key?: string} = {}): Promise<{status: number; headers: Record<string, unknown>; json: any; text: string}> {
  return new Promise((resolve, reject) => {
    const data = opts.body === undefined ? undefined : JSON.stringify(opts.body)
    const req = request(url, {agent: false, ca, cert: opts.cert, key: opts.key, headers: {...(data ? {'content-type': 'application/json'} : {}), ...(opts.token ? {authorization: `Bearer ${opts.token}`} : {})}, method: opts.method ?? 'GET'}, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        let json: unknown
        try {
          json = JSON.parse(text)
        } catch {}
        resolve({headers: res.headers, json, status: res.statusCode ?? 0, text})
      })
    })
    req.on('error', reject)
    req.end(data)
  })
}

describe('mq portal start, mq user create/password/delete, mq audit list (real broker, real HTTPS)', () => {
  let broker: BrokerProcess
  let portal: PortalProcess
  let ca: Buffer
  before(async () => {
    broker = await spawnBroker()
    portal = await spawnPortal({apiPort: broker.apiPort, home: broker.home})
    ca = readFileSync(join(broker.home, 'pki', 'ca.crt'))
  })
  after(async () => {
    await portal?.stop()
    await broker?.cleanup()
  })

  it('creates an admin with mq user create, who logs in over HTTPS (certificate from our CA) and sees the broker overview', async () => {
    const env = {...broker.cliEnv(), MQ_API: `https://127.0.0.1:${broker.apiPort}`}
    const c = await runCli(['user', 'create', 'root@example.com', '--role', 'admin', '--json'], {env, input: 'admin password 1'})
    assert.equal(c.code, 0, c.stderr)
    assert.equal(JSON.parse(c.stdout).role, 'admin')
    const u = await runCli(['user', 'create', 'ops@acme.example', '--client', 'acme'], {env, input: 'user password 1\n'})
    assert.equal(u.code, 0, u.stderr)
    assert.match(u.stdout, /created ops@acme.example \(user, client acme\)/)

    const page = await https(`${portal.url}/`, ca)
    assert.equal(page.status, 200)
    assert.match(page.text, /<script type="module" src="\/assets\/app.js"><\/script>/)
    assert.doesNotMatch(String(page.headers['content-security-policy']), /unsafe-inline/)

    const login = await https(`${portal.url}/portal/auth/login`, ca, {body: {email: 'root@example.com', password: 'admin password 1'}, method: 'POST'})
    assert.equal(login.status, 200, login.text)
    const overview = await https(`${portal.url}/admin/overview`, ca, {token: login.json.access_token})
    assert.equal(overview.status, 200, overview.text)
    assert.equal(typeof overview.json.broker.connections, 'number')
    assert.ok(Array.isArray(overview.json.broker.queues))

    const ops = await https(`${portal.url}/portal/auth/login`, ca, {body: {email: 'ops@acme.example', password: 'user password 1'}, method: 'POST'})
    assert.equal(ops.json.user.client_id, 'acme')
    const pw = await runCli(['user', 'password', 'ops@acme.example'], {env, input: 'a new password'})
    assert.equal(pw.code, 0, pw.stderr)
    assert.equal((await https(`${portal.url}/portal/profile`, ca, {token: ops.json.access_token})).status, 401)
    assert.equal((await https(`${portal.url}/portal/auth/login`, ca, {body: {email: 'ops@acme.example', password: 'a new password'}, method: 'POST'})).status, 200)

    const list = await runCli(['user', 'list', '--json'], {env})
    assert.deepEqual(JSON.parse(list.stdout).map((x: {email: string; client_id: string | null}) => [x.email, x.client_id]), [['ops@acme.example', 'acme'], ['root@example.com', null]])
    assert.equal((await runCli(['user', 'delete', 'ops@acme.example'], {env})).code, 0)

    const audit = await runCli(['audit', 'list', '--json'], {env})
    assert.equal(audit.code, 0, audit.stderr)
    const types = JSON.parse(audit.stdout).map((e: {event_type: string}) => e.event_type)
    for (const t of ['user.create', 'user.password', 'user.delete', 'auth.login']) assert.ok(types.includes(t), `${t} in ${types}`)
    const human = await runCli(['audit', 'list', '--type', 'user.create'], {env})
    assert.match(human.stdout, /EVENT_TYPE/)
    assert.match(human.stdout, /user\.create/)
  })

  it('a certificate issued in the portal works against the broker; revoked in the portal, the broker refuses it once it reloads the CRL', async () => {
    const env = {...broker.cliEnv(), MQ_API: `https://127.0.0.1:${broker.apiPort}`}
    assert.equal((await runCli(['user', 'create', 'certs@example.com', '--role', 'admin'], {env, input: 'admin password 2'})).code, 0)
    const login = await https(`${portal.url}/portal/auth/login`, ca, {body: {email: 'certs@example.com', password: 'admin password 2'}, method: 'POST'})
    const token = login.json.access_token
    const bundle = await https(`${portal.url}/admin/certificates/generate`, ca, {body: {name: 'dora'}, method: 'POST', token})
    assert.equal(bundle.status, 201, bundle.text)
    const asDora = () => https(`https://127.0.0.1:${broker.apiPort}/api/queues`, ca, {cert: bundle.json.cert_pem, key: bundle.json.key_pem})
    assert.equal((await asDora()).status, 200)
    const revoked = await https(`${portal.url}/admin/certificates/revoke`, ca, {body: {name: 'dora', reason: 'key-compromise'}, method: 'POST', token})
    assert.equal(revoked.status, 200, revoked.text)
    // the broker checks pki/crl.pem every broker.crl_check_interval_ms (2 s) and reloads it
    const deadline = Date.now() + 15_000
    let refused = false
    while (!refused && Date.now() < deadline) {
      refused = await asDora().then((r) => r.status === 401 || r.status === 403, () => true)
      if (!refused) await new Promise((r) => setTimeout(r, 250))
    }
    assert.ok(refused, 'the broker still accepts the revoked certificate')
  })
})
