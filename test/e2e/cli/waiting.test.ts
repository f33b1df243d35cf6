/** Issue 20, waiting and durations: mq recv says it waits on a terminal; a duration always has a unit. */
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {after, before, describe, test} from 'node:test'

import {BIN, ROOT, runCli} from '../../helpers/cli.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'

/** Runs the CLI on a pseudo-terminal (stdout and stderr both land in the returned text). */
function onTty(args: string[], env: NodeJS.ProcessEnv): Promise<{code: number | null; text: string}> {
  const cmd = ['stty cols 120 rows 40;', process.execPath, BIN, ...args].join(' ')
  return new Promise((resolve) => {
    const p = spawn('script', ['-qfec', cmd, '/dev/null'], {cwd: ROOT, env: {...process.env, NO_COLOR: '1', ...env}, stdio: ['pipe', 'pipe', 'pipe']})
    let text = ''
    p.stdout.on('data', (d: Buffer) => (text += d.toString()))
    p.on('close', (code) => resolve({code, text}))
  })
}

describe('durations and waiting', () => {
  let b: BrokerProcess
  before(async () => {
    b = await spawnBroker({portsInConfig: true})
  })
  after(async () => {
    await b?.cleanup()
  })

  test('mq recv on a terminal says what it waits for, on stderr; piped, it stays silent', async () => {
    assert.equal((await runCli(['queue', 'declare', 'waitq'], {home: b.home})).code, 0)
    const tty = await onTty(['recv', '--queue', 'waitq', '--accept', 'plain', '--timeout', '1s'], {MQ_HOME: b.home})
    assert.equal(tty.code, 75, tty.text)
    assert.match(tty.text, /waiting for messages on waitq for up to 1s each \(Ctrl-C to stop\)/)
    const piped = await runCli(['recv', '--queue', 'waitq', '--accept', 'plain', '--timeout', '1s'], {home: b.home})
    assert.equal(piped.code, 75)
    assert.doesNotMatch(piped.stderr, /waiting for messages/)
  })

  test('every duration flag refuses a bare number with both readings as the hint, and takes units', async () => {
    for (const args of [
      ['queue', 'list', '--timeout', '5'],
      ['recv', '--queue', 'waitq', '--accept', 'plain', '--timeout', '5'],
      ['queue', 'declare', 'ttlq', '--ttl', '60000'],
      ['worker', 'start', '--retry-delay', '200'],
    ]) {
      const r = await runCli([...args, '--json'], {home: b.home})
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`)
      const e = JSON.parse(r.stdout).error
      assert.equal(e.code, 'E_DURATION')
      assert.match(e.message, /has no unit/)
      assert.match(e.hint, /\d+s \(seconds\) or .*\d+ms \(milliseconds\)/)
    }
    const ok = await runCli(['queue', 'declare', 'ttlq', '--ttl', '60s'], {home: b.home})
    assert.equal(ok.code, 0, ok.stderr)
  })
})
