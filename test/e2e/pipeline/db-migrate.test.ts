import assert from 'node:assert/strict'
import {after, before, describe, it} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {tempMysqlDatabase} from '../../helpers/services.js'

describe('mq db migrate', () => {
  const h = tempHome()
  let db: Awaited<ReturnType<typeof tempMysqlDatabase>>
  before(async () => {
    db = await tempMysqlDatabase()
  })
  after(async () => {
    await db?.drop()
    h.cleanup()
  })

  for (const backend of ['sqlite', 'mysql']) {
    it(`applies pending migrations once on ${backend}, then reports up to date`, async () => {
      const url = backend === 'sqlite' ? 'sqlite' : db.url
      const st0 = await runCli(['db', 'migrate', '--store', url, '--status', '--json'], {home: h.dir})
      assert.equal(st0.code, 0, st0.stderr)
      assert.deepEqual(JSON.parse(st0.stdout).pending, [1, 2])
      const a = await runCli(['db', 'migrate', '--store', url, '--json'], {home: h.dir})
      assert.equal(a.code, 0, a.stderr)
      assert.deepEqual(JSON.parse(a.stdout).applied, [1, 2])
      const b = await runCli(['db', 'migrate', '--store', url], {home: h.dir})
      assert.equal(b.code, 0, b.stderr)
      assert.match(b.stdout, /up to date at version 2/)
    })
  }

  it('a MySQL server that is not there exits 69 with a hint', async () => {
    const r = await runCli(['db', 'migrate', '--url', 'mysql://root:secretpw@127.0.0.1:1/mq'], {home: h.dir})
    assert.equal(r.code, 69)
    assert.match(r.stderr, /Try this/)
    assert.equal(r.stderr.includes('secretpw'), false)
  })
})
