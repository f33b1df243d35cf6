/** mq cert show takes the serials mq cert list prints, so each row (e.g. alice's e2e-sign certificate) can be shown. */
import assert from 'node:assert/strict'
import {test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {testPki} from '../../helpers/pki.js'

test('mq cert show SERIAL shows that certificate; a name still works', async () => {
  const h = tempHome('mq-qa-certshow-')
  try {
    await testPki(h.dir, {clients: ['admin', 'ops']})
    const list = JSON.parse((await runCli(['cert', 'list', '--json'], {home: h.dir})).stdout) as {name: string; serial: string; type: string}[]
    const ops = list.find((c) => c.name === 'ops')!
    const bySerial = await runCli(['cert', 'show', ops.serial, '--json'], {home: h.dir})
    assert.equal(bySerial.code, 0, bySerial.stderr)
    assert.equal(JSON.parse(bySerial.stdout).name, 'ops')
    const upper = await runCli(['cert', 'show', ops.serial.toUpperCase()], {home: h.dir})
    assert.match(upper.stdout, /^name: +ops$/m)
    const byName = await runCli(['cert', 'show', 'admin', '--json'], {home: h.dir})
    assert.equal(JSON.parse(byName.stdout).type, 'client')
    const none = await runCli(['cert', 'show', 'deadbeefdeadbeef', '--json'], {home: h.dir})
    assert.equal(none.code, 66)
    assert.equal(JSON.parse(none.stdout).error.code, 'E_NOT_FOUND')
  } finally {
    h.cleanup()
  }
})
