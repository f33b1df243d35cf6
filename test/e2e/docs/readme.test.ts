/**
 * The README's command blocks, run as written (with `mq` = the built CLI) against a fresh broker:
 * a new user copies these lines, so each must work in order, exit 0 and print what it says.
 */
import assert from 'node:assert/strict'
import {spawn, spawnSync} from 'node:child_process'
import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {BIN, ROOT} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

/** The lines of the first ```sh block after `heading`, comments dropped. */
function shBlock(heading: string): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const at = readme.indexOf(heading)
  assert.ok(at >= 0, `README has no "${heading}"`)
  const m = /```sh\n([\s\S]*?)```/.exec(readme.slice(at))
  assert.ok(m, `no sh block after "${heading}"`)
  return m[1]
    .split('\n')
    .map((l) => l.replace(/\s+#\s.*$/, '').trim())
    .filter(Boolean)
}

describe('README, followed literally', () => {
  let broker: BrokerProcess
  const work = tempHome('mq-qa-readme-cwd-')
  before(async () => {
    // non-default ports in the home's config.yaml, as a user moving a home would set them: clients follow with no flag
    broker = await spawnBroker({portsInConfig: true})
    writeFileSync(join(work.dir, 'big.bin'), Buffer.from(Array.from({length: 3000}, (_, i) => (i * 7) % 256)))
    writeFileSync(join(work.dir, 'log.txt'), 'first line\nsecond line\n')
  })
  after(async () => {
    await broker?.cleanup()
    work.cleanup()
  })

  // the walk-through as a transcript: each command, its exit code and time (printed at the end)
  const transcript: string[] = []
  const started = Date.now()
  after(() => {
    console.log(`README walk-through on non-default ports: ${transcript.length} commands in ${((Date.now() - started) / 1000).toFixed(1)} s (a broker restart included)\n${transcript.join('\n')}`)
  })
  const sh = (line: string) => {
    const t0 = Date.now()
    const r = spawnSync('bash', ['-c', `mq() { "${process.execPath}" "${BIN}" "$@"; }\n${line}`], {
      cwd: work.dir,
      encoding: 'utf8',
      env: {...process.env, MQ_API: undefined, MQ_BROKER: undefined, MQ_HOME: broker.home, NO_COLOR: '1'},
      timeout: 120_000,
    })
    transcript.push(`  $ ${line}   # exit ${r.status}, ${Date.now() - t0} ms`)
    return r
  }

  test('Broker: the quick-start block, with a broker restart after the declarations', async () => {
    for (const line of shBlock('## Broker')) {
      if (line.startsWith('mq broker start')) continue // running already, on free ports
      // the walk-through survives a restart: queues, exchanges and bindings declared from the CLI are durable
      if (line.startsWith('mq queue list')) {
        await broker.stop()
        await broker.restart()
        transcript.push('  (broker restarted)')
      }
      const r = sh(line.replace('<message-id>', "$(mq send --plain --exchange shop --routing-key order.created '{}')"))
      assert.equal(r.status, 0, `${line}\n${r.stdout}${r.stderr}`)
      if (line.startsWith('mq message status')) assert.match(r.stdout, /sent|delivered/)
    }
  })

  test('send/recv: the end-to-end block, then Ctrl-C ends --follow cleanly', async () => {
    const lines = shBlock('## End-to-end encrypted messaging')
    const follow = lines.find((l) => l.includes('--follow'))
    assert.ok(follow)
    for (const line of lines) {
      if (line === follow || line.startsWith('mq bench')) continue // runs until Ctrl-C / a benchmark
      const r = sh(line)
      assert.equal(r.status, 0, `${line}\n${r.stdout}${r.stderr}`)
      if (line === 'mq recv --queue inbox --as bob') assert.equal(r.stdout, 'hello bob')
      if (line.startsWith('mq recv --queue logs')) {
        assert.deepEqual(
          r.stdout.trim().split('\n').map((l) => JSON.parse(l).payload),
          ['first line', 'second line'],
        )
      }
    }
    // the --follow line as a user runs it, stopped with Ctrl-C once big.bin arrived
    const child = spawn(process.execPath, [BIN, ...follow.replace(/^mq /, '').split(/\s+/)], {cwd: work.dir, env: {...process.env, MQ_API: undefined, MQ_BROKER: undefined, MQ_HOME: broker.home}, stdio: ['ignore', 'pipe', 'pipe']})
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const out = join(work.dir, 'received_messages.json')
    for (let i = 0; i < 300; i++) {
      await new Promise((r) => setTimeout(r, 100))
      try {
        if (readFileSync(out, 'utf8').endsWith('\n')) break
      } catch {}
    }
    child.kill('SIGINT')
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
    assert.equal(code, 0, stderr)
    const record = JSON.parse(readFileSync(out, 'utf8').trim())
    assert.deepEqual(Buffer.from(record.message, record.encoding === 'base64' ? 'base64' : 'utf8'), readFileSync(join(work.dir, 'big.bin')))
  })
})
