/**
 * Issue 18, failure 7: a broker restarted right after kill -9, before its parent reaped it. The
 * dead broker is a zombie: kill(pid, 0) still succeeds, yet it holds nothing, so its lock is stale.
 */
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'

import {LOCK_FILE, lockDataDir} from '../../../src/lib/broker/lock.js'
import {tempHome} from '../../helpers/home.js'
import {waitFor} from '../../helpers/services.js'

const state = (pid: number) => {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3)
}

test('a lock held by a zombie (killed, not yet reaped) is taken over; a live holder still refuses', {timeout: 20_000}, async () => {
  const h = tempHome('mq-lock-zombie-')
  // `sleep 30` replaces the shell and never reaps its background child: killed, that child stays a zombie
  const parent = spawn('bash', ['-c', 'sleep 60 & echo $!; exec sleep 30'], {stdio: ['ignore', 'pipe', 'ignore']})
  try {
    const pid = await new Promise<number>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))))
    const data = join(h.dir, 'data')
    // a live holder: refused
    lockDataDir(data).release()
    writeFileSync(join(data, LOCK_FILE), `${pid}\n`)
    assert.throws(() => lockDataDir(data), (e: Error & {code?: string}) => e.code === 'E_DATA_LOCKED')
    // kill -9: a zombie until reaped, which its parent never does
    process.kill(pid, 'SIGKILL')
    await waitFor(() => state(pid) === 'Z', 5000)
    assert.doesNotThrow(() => process.kill(pid, 0), 'a zombie still answers kill(pid, 0)')
    const lock = lockDataDir(data)
    assert.equal(readFileSync(lock.file, 'utf8').trim(), String(process.pid))
    lock.release()
  } finally {
    parent.kill('SIGKILL')
    h.cleanup()
  }
})
