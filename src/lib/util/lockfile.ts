import {closeSync, openSync, statSync, unlinkSync} from 'node:fs'

import {TempFailError} from '../errors.js'

/** What a caller says when the lock stays taken: its error code and the command that holds it. */
export interface LockRefusal {
  code: string
  /** e.g. "mq cert" */
  holder: string
}

/**
 * Runs fn holding an O_EXCL lock file shared by every mq process on this home: waits up to 15 s
 * for another holder, and breaks a lock older than 2 min (its holder died without removing it).
 */
export async function withLockFile<T>(lock: string, refusal: LockRefusal, fn: () => Promise<T> | T): Promise<T> {
  const deadline = Date.now() + 15_000
  for (;;) {
    try {
      closeSync(openSync(lock, 'wx', 0o600))
      break
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      try {
        if (Date.now() - statSync(lock).mtimeMs > 120_000) unlinkSync(lock)
      } catch {}
      if (Date.now() > deadline) {
        throw new TempFailError(refusal.code, `Another mq process holds ${lock}.`, {hint: `Try this: wait for it to finish, or remove the lock file if no ${refusal.holder} command is running.`})
      }
      await new Promise((r) => setTimeout(r, 10 + Math.random() * 40))
    }
  }
  try {
    return await fn()
  } finally {
    try {
      unlinkSync(lock)
    } catch {}
  }
}
