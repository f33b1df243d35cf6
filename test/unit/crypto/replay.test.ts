import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {after, describe, it} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {ReplayGuard, replayFileName} from '../../../src/lib/crypto/replay.js'
import {tempHome} from '../../helpers/home.js'

describe('replay guard', () => {
  const h = tempHome()
  after(() => h.cleanup())
  const home = new MqHome(h.dir)

  it('remembers accepted ids per identity and sender across reopen', async () => {
    const g = await ReplayGuard.open(home, 'bob')
    assert.equal(await g.seen('m1', 'alice'), false)
    assert.equal(await g.record('m1', 'alice'), true)
    assert.equal(await g.record('m1', 'alice'), false)
    assert.equal(await g.seen('m1', 'carol'), false, 'ids are scoped by sender')
    await g.close()
    assert.ok(existsSync(join(home.data, replayFileName('bob'))))
    const again = await ReplayGuard.open(home, 'bob')
    assert.equal(await again.seen('m1', 'alice'), true)
    await again.close()
    const carol = await ReplayGuard.open(home, 'carol')
    assert.equal(await carol.seen('m1', 'alice'), false, 'each identity has its own record')
    await carol.close()
  })

  it('maps odd identity names to a safe file name', () => {
    assert.equal(replayFileName('bob'), 'replay-bob.db')
    assert.match(replayFileName('../etc/passwd'), /^replay-[0-9a-f]{32}\.db$/)
  })
})
