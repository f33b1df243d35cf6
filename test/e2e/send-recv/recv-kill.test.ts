/**
 * `mq recv` printing to stdout, killed with SIGKILL in the middle of a stream, then run again: every
 * message is printed at least once, none is lost or set aside, and the queue ends empty. The kill is
 * made to land where it hurts most: the reader stops draining the pipe, so recv blocks inside a
 * batch it has recorded as "being written", some of its lines out and the rest not yet.
 */
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {after, before, describe, it} from 'node:test'

import type {BrokerClient} from '../../../src/lib/client/client.js'
import {BIN, ROOT, runCli} from '../../helpers/cli.js'
import {type TestBroker, startTestBroker} from './harness.js'

describe('mq recv on stdout killed with kill -9 mid-stream', () => {
  let b: TestBroker
  let admin: BrokerClient

  before(async () => {
    b = await startTestBroker(['alice', 'bob'])
    admin = await b.client()
    await admin.declareQueue('bob.stream', {deadLetter: 'bob.stream.dlq', durable: true})
  })
  after(async () => {
    await admin?.close()
    await b?.stop()
  })

  const depth = async (q: string): Promise<number> => (await admin.listQueues()).find((x) => x.name === q)?.messages ?? -1

  it('after a restart every message was printed at least once; nothing lost, nothing dead-lettered', async () => {
    const N = 1500
    // ~1 KB lines: one batch of recv (up to 256) is far more than a pipe holds
    const sent = Array.from({length: N}, (_, i) => `${String(i).padStart(5, '0')} ${'x'.repeat(1000)}`)
    const s = await runCli(['send', '--queue', 'bob.stream', '--from', 'alice', '--to', 'bob', '--lines'], {env: b.env, input: sent.join('\n') + '\n'})
    assert.equal(s.code, 0, s.stderr)

    const child = spawn(process.execPath, [BIN, 'recv', '--queue', 'bob.stream', '--as', 'bob', '--follow', '--lines'], {
      cwd: ROOT,
      env: {...process.env, ...b.env, NO_COLOR: '1'},
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const out: Buffer[] = []
    let got = 0
    let stopped = false
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const closed = new Promise<void>((r) => child.on('close', () => r()))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`recv printed ${got} bytes in 60 s:\n${stderr}`)), 60_000)
      child.stdout.on('data', (d: Buffer) => {
        out.push(d)
        got += d.length
        if (got >= 200_000 && !stopped) {
          // stop reading: recv fills the pipe and blocks mid-batch
          stopped = true
          child.stdout.pause()
          clearTimeout(timer)
          resolve()
        }
      })
    })
    await new Promise((r) => setTimeout(r, 1500))
    child.kill('SIGKILL')
    child.stdout.resume()
    await closed
    const first = Buffer.concat(out).toString().split('\n').filter(Boolean)
    assert.ok(first.length > 0 && first.length < N, `killed mid-stream (${first.length} of ${N} printed)`)

    const second = await runCli(['recv', '--queue', 'bob.stream', '--as', 'bob', '--follow', '--lines', '--timeout', '4s'], {env: b.env})
    assert.equal(second.code, 0, second.stderr)
    const again = second.stdout.split('\n').filter(Boolean)

    const printed = new Set([...first, ...again])
    const missing = sent.filter((l) => !printed.has(l))
    assert.deepEqual(missing.map((l) => l.slice(0, 5)), [], 'every message printed at least once')
    assert.ok([...printed].every((l) => sent.includes(l)), 'no torn or foreign line')
    // only what was in hand when recv died may appear twice
    const twice = first.length + again.length - N
    assert.ok(twice >= 0 && twice <= 256, `${twice} printed twice`)
    assert.doesNotMatch(second.stderr, /rejected|E_RECV_IN_DOUBT/)
    // the batch recv was printing when it died is printed again, and said so
    assert.match(second.stderr, /mq recv: \d+ redelivered message\(s\) were being printed when an earlier run stopped; printed again, so they may appear twice/)
    assert.equal(await depth('bob.stream'), 0)
    assert.equal(await depth('bob.stream.dlq'), 0)
  })
})
