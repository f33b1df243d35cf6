/**
 * Exclusive lock on a broker's data directory: two brokers on one store would deliver the same
 * durable messages twice. The lock file holds the owner's pid; it is created with O_EXCL, a lock
 * whose pid is no longer alive (a kill -9'd broker, also one not yet reaped: a zombie) is taken
 * over, and it is removed on clean shutdown.
 */
import {closeSync, openSync, readFileSync, statSync, unlinkSync, writeSync} from 'node:fs'
import {join} from 'node:path'

import {TempFailError} from '../errors.js'
import {ensurePrivateDir} from '../util/fs.js'

export const LOCK_FILE = 'broker.lock'

/**
 * A process that can still hold the lock. A kill -9'd broker its parent has not reaped yet is a
 * zombie: kill(pid, 0) still succeeds, but it holds nothing, so /proc/PID/stat state Z (or X,
 * dead) counts as gone.
 */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (error) {
    // EPERM: the process exists but belongs to someone else
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  return !['Z', 'X'].includes(procState(pid) ?? '')
}

/** The state letter of /proc/PID/stat (after the parenthesised command, which may hold spaces); undefined off Linux. */
function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
  } catch {
    return undefined
  }
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(file, 'utf8').trim(), 10)
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

function recent(file: string): boolean {
  try {
    return Date.now() - statSync(file).mtimeMs < 5000
  } catch {
    return false
  }
}

export interface DataDirLock {
  file: string
  release(): void
}

/** Takes the lock or throws TempFailError E_DATA_LOCKED (exit 75) naming the holder's pid. */
export function lockDataDir(dataDir: string): DataDirLock {
  ensurePrivateDir(dataDir)
  const file = join(dataDir, LOCK_FILE)
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number
    try {
      fd = openSync(file, 'wx', 0o600)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      const pid = readPid(file)
      if (pid !== undefined && pid !== process.pid && alive(pid)) {
        throw new TempFailError('E_DATA_LOCKED', `another broker (pid ${pid}) is using the data directory ${dataDir}`, {
          details: {lockFile: file, pid},
          hint: `Try this: stop that broker first (kill ${pid}), or start this one with another home (--home DIR); if pid ${pid} is not an mq broker, delete ${file}`,
        })
      }
      if (pid === undefined && recent(file)) {
        // another broker is between creating the file and writing its pid
        throw new TempFailError('E_DATA_LOCKED', `another broker is starting on the data directory ${dataDir}`, {hint: 'Try this: wait for it, or use another home (--home DIR)'})
      }
      // stale (owner gone, or an unreadable half-written file): take it over
      try {
        unlinkSync(file)
      } catch {}
      continue
    }
    writeSync(fd, `${process.pid}\n`)
    closeSync(fd)
    let released = false
    return {
      file,
      release() {
        if (released) return
        released = true
        // only remove our own lock
        if (readPid(file) === process.pid) {
          try {
            unlinkSync(file)
          } catch {}
        }
      },
    }
  }
  throw new TempFailError('E_DATA_LOCKED', `could not lock the data directory ${dataDir}`, {hint: `Try this: check that no other broker uses it, then delete ${file}`})
}
