import assert from 'node:assert/strict'
import {existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {type BrowserContext, type Page, chromium} from 'playwright-core'

import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {RecordsStore} from '../../../src/lib/records/store.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {ROOT, runCli} from '../../helpers/cli.js'
import {type PortalProcess, seedMessages, spawnPortal} from '../../helpers/portal.js'

const CHROMIUM = process.env.MQ_CHROMIUM ?? '/usr/bin/chromium'
// screenshots of every page, kept as test artifacts (gitignored)
const ARTIFACTS = join(ROOT, 'test-artifacts', 'portal')
const ACCESS_TTL_S = 3
const missing = !existsSync(CHROMIUM)
if (missing && process.env.CI) throw new Error(`${CHROMIUM} is missing: .ci/run installs Debian's chromium package`)

describe('the portal in a real browser (Debian chromium via playwright-core)', {skip: missing ? `no ${CHROMIUM} here (apt-get install -y chromium)` : false}, () => {
  let broker: BrokerProcess
  let portal: PortalProcess
  let context: BrowserContext
  let profile: string
  const downloads = mkdtempSync(join(tmpdir(), 'mq-downloads-'))

  before(async () => {
    mkdirSync(ARTIFACTS, {recursive: true})
    broker = await spawnBroker()
    const env = {...broker.cliEnv(), MQ_API: `https://127.0.0.1:${broker.apiPort}`}
    for (const [email, role, client] of [['admin@example.com', 'admin', ''], ['alice@acme.example', 'user', 'acme'], ['bob@globex.example', 'user', 'globex']]) {
      const r = await runCli(['user', 'create', email, '--role', role, ...(client ? ['--client', client] : [])], {env, input: 'portal password'})
      assert.equal(r.code, 0, r.stderr)
    }
    assert.equal((await runCli(['queue', 'declare', 'orders'], {env})).code, 0)
    const store = await RecordsStore.open({config: defaultConfig(), home: new MqHome(broker.home)})
    await seedMessages(store, 'acme', 30)
    await seedMessages(store, 'globex', 5)
    await store.close()
    portal = await spawnPortal({apiPort: broker.apiPort, env: {MQ_PORTAL_ACCESS_TTL_S: String(ACCESS_TTL_S)}, home: broker.home})
    profile = mkdtempSync(join(tmpdir(), 'mq-chromium-'))
    context = await chromium.launchPersistentContext(profile, {
      acceptDownloads: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      executablePath: CHROMIUM,
      headless: true,
      // the portal's certificate is from our own CA, which this fresh profile does not know
      ignoreHTTPSErrors: true,
      viewport: {height: 800, width: 1280},
    })
  })
  after(async () => {
    await context?.close()
    await portal?.stop()
    await broker?.cleanup()
    if (profile) rmSync(profile, {force: true, recursive: true})
    rmSync(downloads, {force: true, recursive: true})
  })

  /** A fresh tab (its own sessionStorage, so its own login); fails the test on any CSP violation or page error. */
  async function tab(): Promise<Page & {problems: string[]}> {
    const page = (await context.newPage()) as Page & {problems: string[]}
    page.problems = []
    page.on('console', (m) => m.type() === 'error' && !/401|429|status of 4/.test(m.text()) && page.problems.push(m.text()))
    page.on('pageerror', (e) => page.problems.push(e.message))
    return page
  }

  async function login(page: Page, email: string, password = 'portal password') {
    await page.goto(`${portal.url}/#/login`)
    await page.fill('#email', email)
    await page.fill('#password', password)
    await page.click('#login-submit')
  }

  const shot = (page: Page, name: string) => page.screenshot({fullPage: true, path: join(ARTIFACTS, `${name}.png`)})

  it('a wrong password shows an error and keeps the user on the login page', async () => {
    const page = await tab()
    await login(page, 'alice@acme.example', 'not the password')
    await page.waitForSelector('#login-error')
    assert.match(await page.textContent('#login-error') ?? '', /Wrong e-mail address or password/)
    assert.match(page.url(), /#\/login$/)
    await shot(page, 'login-error')
    assert.deepEqual(page.problems, [])
    await page.close()
  })

  it("a user logs in and sees only their own client's messages, pages through them and opens one", async () => {
    const page = await tab()
    await login(page, 'alice@acme.example')
    await page.waitForSelector('#messages tbody tr[data-id]')
    const ids = await page.$$eval('#messages tbody tr[data-id]', (rows) => rows.map((r) => r.getAttribute('data-id')))
    assert.equal(ids.length, 25)
    assert.ok(ids.every((id) => id!.startsWith('acme-')), ids.join(','))
    assert.doesNotMatch(await page.textContent('#messages') ?? '', /\+4915200000\d{3}/, 'numbers are masked')
    await shot(page, 'messages')
    await page.click('#next-page')
    await page.waitForSelector('#first-page')
    const page2 = await page.$$eval('#messages tbody tr[data-id]', (rows) => rows.map((r) => r.getAttribute('data-id')))
    assert.deepEqual(page2, ['acme-0004', 'acme-0003', 'acme-0002', 'acme-0001', 'acme-0000'])
    await page.selectOption('#filter-status', 'queued')
    await page.click('#message-filters button[type=submit]')
    await page.waitForURL(/status=queued/)
    await page.click('#messages a[href="#/messages/acme-0007"]')
    await page.waitForSelector('#message-detail dl')
    assert.match(await page.textContent('#message-detail') ?? '', /acme-0007/)
    assert.equal(await page.$('#decrypt'), null, 'users cannot decrypt')
    await shot(page, 'message-detail')
    // the admin pages are not in a user's menu, and the API refuses them
    assert.equal(await page.$('nav a[href="#/admin/users"]'), null)
    assert.deepEqual(page.problems, [])
    await page.close()
  })

  it('an admin issues a certificate and downloads it, revokes it and sees it revoked, creates a user, reads the audit log and the overview', async () => {
    const page = await tab()
    await login(page, 'admin@example.com')
    await page.waitForSelector('nav a[href="#/admin/certificates"]')
    await page.click('nav a[href="#/admin/certificates"]')
    await page.fill('#issue-name', 'carol')
    await page.click('#issue-submit')
    await page.waitForSelector('#download-bundle')
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-bundle')])
    assert.equal(download.suggestedFilename(), 'carol-bundle.pem')
    const file = join(downloads, 'carol-bundle.pem')
    await download.saveAs(file)
    const pem = readFileSync(file, 'utf8')
    assert.equal(pem.match(/BEGIN CERTIFICATE/g)?.length, 2)
    assert.match(pem, /BEGIN PRIVATE KEY/)
    await page.waitForSelector('#cert-list tr[data-name="carol"][data-status="active"]')
    await shot(page, 'certificates-issued')
    await page.selectOption('#cert-list tr[data-name="carol"] .revoke-reason', 'key-compromise')
    await page.click('#cert-list tr[data-name="carol"] button.revoke')
    await page.waitForSelector('#cert-ok')
    await page.waitForSelector('#cert-list tr[data-name="carol"][data-status="revoked"]')
    await page.selectOption('#cert-filter', 'revoked')
    // a function, not a string: the portal's CSP forbids eval, in tests too
    await page.waitForFunction(() => [...(globalThis as any).document.querySelectorAll('#cert-list tbody tr[data-name]')].every((r: any) => r.getAttribute('data-status') === 'revoked'))
    assert.match(await page.textContent('#cert-list') ?? '', /key-compromise/)
    await shot(page, 'certificates-revoked')

    await page.click('nav a[href="#/admin/users"]')
    await page.fill('#user-email', 'dave@initech.example')
    await page.fill('#user-password', 'dave password 1')
    await page.fill('#user-client', 'initech')
    await page.click('#user-submit')
    await page.waitForSelector('#user-list tr[data-email="dave@initech.example"]')
    assert.match(await page.textContent('#user-ok') ?? '', /Created dave@initech.example/)
    await shot(page, 'users')

    await page.click('nav a[href="#/admin/audit"]')
    await page.waitForSelector('#audit-list tr[data-type="user.create"]')
    for (const t of ['cert.issue', 'cert.revoke', 'user.create', 'auth.login']) assert.ok(await page.$(`#audit-list tr[data-type="${t}"]`), t)
    assert.match(await page.textContent('#audit-list tr[data-type="cert.issue"]') ?? '', /admin@example.com.*carol/)
    await shot(page, 'audit')

    await page.click('nav a[href="#/admin/overview"]')
    await page.waitForSelector('#stat-connections')
    await page.waitForSelector('#overview-queues tr[data-queue="orders"] svg.spark polyline', {state: 'attached'})
    await shot(page, 'overview')
    // an admin sees every client's messages and can decrypt (audited)
    await page.goto(`${portal.url}/#/messages/globex-0001`)
    await page.click('#decrypt')
    await page.waitForSelector('#decrypted pre')
    assert.equal(await page.textContent('#decrypted pre'), 'hello 1 from globex')
    assert.deepEqual(page.problems, [])
    await page.close()
  })

  it('refreshes an expired access token transparently, and logout ends the session', async () => {
    const page = await tab()
    const refreshes: number[] = []
    page.on('response', (r) => r.url().endsWith('/portal/auth/refresh') && refreshes.push(r.status()))
    await login(page, 'bob@globex.example')
    await page.waitForSelector('#messages tbody tr[data-id]')
    await page.waitForTimeout(ACCESS_TTL_S * 1000 + 1200)
    await page.selectOption('#filter-status', 'queued')
    await page.click('#message-filters button[type=submit]')
    await page.waitForURL(/status=queued/)
    await page.waitForSelector('#messages tbody tr[data-id="globex-0004"]')
    assert.deepEqual(refreshes, [200])
    assert.match(page.url(), /#\/messages/)
    const before = await page.evaluate<string | null>("sessionStorage.getItem('mq.portal.tokens')")
    await page.click('#logout')
    await page.waitForSelector('#login-form')
    assert.equal(await page.evaluate("sessionStorage.getItem('mq.portal.tokens')"), null)
    // the old tokens no longer work on the server either
    const token = JSON.parse(before!).access_token
    const status = await page.evaluate(`fetch('/portal/profile', {headers: {authorization: 'Bearer ${token}'}}).then((r) => r.status)`)
    assert.equal(status, 401)
    await shot(page, 'logged-out')
    assert.deepEqual(page.problems, [])
    await page.close()
  })
})
