import {randomBytes} from 'node:crypto'
import {chmodSync, closeSync, fsyncSync, mkdirSync, openSync, renameSync, statSync, unlinkSync, writeSync} from 'node:fs'
import {dirname} from 'node:path'

import {PermissionError} from '../errors.js'

/** mkdir -p with a mode; an existing directory keeps its mode unless `strict` tightens it. */
export function ensureDir(dir: string, mode = 0o755): void {
  mkdirSync(dir, {recursive: true, mode})
}

/** A directory for secrets: 0700, refusing one that others can read. */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, {recursive: true, mode: 0o700})
  const st = statSync(dir)
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700)
}

/**
 * Write a file atomically: temp file in the same directory, fsync, rename. Readers see the
 * old content or the new, never a torn write.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o644): void {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  const fd = openSync(tmp, 'wx', mode)
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data)
    fsyncSync(fd)
  } catch (error) {
    closeSync(fd)
    try {
      unlinkSync(tmp)
    } catch {}
    throw error
  }
  closeSync(fd)
  chmodSync(tmp, mode)
  renameSync(tmp, file)
}

/** Refuse to trust or overwrite a secret file that group or others can read. */
export function assertPrivateFile(file: string): void {
  let st
  try {
    st = statSync(file)
  } catch {
    return
  }
  if ((st.mode & 0o077) !== 0) {
    throw new PermissionError('E_KEY_PERMISSIONS', `${file} is readable by other users (mode ${(st.mode & 0o777).toString(8)}).`, {
      hint: `Try this: chmod 600 ${file}`,
    })
  }
}

/** Write a private key or secret: 0600 in a 0700 directory, atomically. */
export function writeSecretFile(file: string, data: string | Uint8Array): void {
  ensurePrivateDir(dirname(file))
  assertPrivateFile(file)
  writeFileAtomic(file, data, 0o600)
}
