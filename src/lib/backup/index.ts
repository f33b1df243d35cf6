/**
 * `mq backup`: one consistent, encrypted archive of a home while its servers run.
 *
 * - SQLite stores (data/*.db) are copied with SQLite's online backup API into a staging directory: a
 *   snapshot of committed transactions, never a file copy of a live WAL database (which can tear).
 * - pki/ is read under the PKI index lock, so index.json, the issued certificates and the CRL agree.
 * - secrets/, keys/, relay/ and config.yaml are copied as files.
 * - data/bodies (the broker's body segments) is copied against the snapshot of broker.db: each segment
 *   its snapshot has live rows in, up to the end its snapshot committed (see copySegments).
 * A manifest lists every file with its size, mode and SHA-256; verify and restore check each one.
 */
import {createHash, randomBytes} from 'node:crypto'
import {chmodSync, closeSync, existsSync, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, unlinkSync, writeSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {basename, dirname, join, resolve, sep} from 'node:path'

import Database from 'better-sqlite3'

import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {DataError, ExitCode, MqError, UsageError} from '../errors.js'
import {segmentFile, segmentId} from '../broker/body-segments.js'
import {IndexStore} from '../pki/index-store.js'
import {Journal} from '../relay/journal.js'
import {redact} from '../store/sql.js'
import {ArchiveReader, ArchiveWriter, PlainStream} from './archive.js'

export interface ManifestFile {
  path: string
  kind: 'sqlite' | 'file'
  mode: number
  size: number
  sha256: string
}

export interface MysqlNote {
  url: string
  database: string
  command: string
  records_key_included: boolean
}

export interface Manifest {
  format: 'mq-backup-manifest'
  version: 1
  created_at: string
  source_home: string
  files: ManifestFile[]
  mysql: MysqlNote | null
}

export interface BackupSummary {
  file: string
  created_at: string
  files: number
  bytes: number
  sqlite: string[]
  mysql: MysqlNote | null
}

const SQLITE_MAGIC = Buffer.from('SQLite format 3\0')
// never in an archive: live SQLite side files, locks, half-written temp files
const SKIP = [/-wal$/, /-shm$/, /-journal$/, /\.lock$/, /\.tmp$/]
const TOP = ['config.yaml', 'pki', 'secrets', 'keys', 'relay', 'data']
const BODIES = 'data/bodies'
/**
 * The relay's journal (src/lib/relay/journal.ts): acknowledged messages not yet in relay.db. Copied
 * before the databases: what leaves it afterwards went into relay.db first, so the snapshot taken
 * next has it, and a restored relay replays only records above the snapshot's watermark.
 */
const RELAY_JOURNAL = /^data\/[^/]+\.jnl(\.prev)?$/

/** fds of the segment files there now: a segment removed meanwhile stays readable through them */
function holdSegments(dir: string): Map<number, number> {
  const held = new Map<number, number>()
  if (!existsSync(dir)) return held
  for (const n of readdirSync(dir)) {
    const id = segmentId(n)
    if (id === undefined) continue
    try {
      held.set(id, openSync(join(dir, n), 'r'))
    } catch {}
  }
  return held
}

function release(held: Map<number, number>): void {
  for (const fd of held.values()) closeSync(fd)
  held.clear()
}

/** the segments a broker.db (snapshot) has live rows in, and how many bytes of each it committed */
function committedSegments(dbFile: string): {id: number; end: number}[] {
  const db = new Database(dbFile, {readonly: true})
  try {
    if (!db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'body_segments'").get()) return []
    return db.prepare('SELECT id, end FROM body_segments WHERE live > 0 ORDER BY id').all() as {id: number; end: number}[]
  } finally {
    db.close()
  }
}

/**
 * Copies the body segments the staged broker.db points at, each up to its committed end (what comes
 * after is a tail no committed row points at). Segments are append-only and a segment only goes once
 * it has no live rows: one held open before the snapshot, or still there after it, holds every byte the
 * snapshot points at. Only a segment made and emptied in between is missing: then the snapshot is taken
 * again. Returns the relative paths written.
 */
async function copySegments(root: string, stage: string, held: Map<number, number>): Promise<string[]> {
  const dir = join(root, BODIES)
  const stagedDb = join(stage, 'data', 'broker.db')
  for (let attempt = 1; ; attempt++) {
    const need = committedSegments(stagedDb)
    const missing: number[] = []
    for (const {id, end} of need) {
      if (!held.has(id)) {
        try {
          held.set(id, openSync(segmentFile(dir, id), 'r'))
        } catch {}
      }
      const fd = held.get(id)
      if (fd === undefined || fstatSync(fd).size < end) missing.push(id)
    }
    if (missing.length === 0) {
      const out: string[] = []
      const b = Buffer.alloc(1 << 20)
      if (need.length > 0) mkdirSync(join(stage, BODIES), {mode: 0o700, recursive: true})
      for (const {id, end} of need) {
        const rel = `${BODIES}/${basename(segmentFile(dir, id))}`
        const wfd = openSync(join(stage, rel), 'w', 0o600)
        try {
          for (let at = 0; at < end; ) {
            const n = readSync(held.get(id)!, b, 0, Math.min(b.length, end - at), at)
            if (n === 0) throw new DataError('E_BACKUP_SEGMENT', `${rel} ended while it was copied.`, {hint: 'Try this: run the backup again.'})
            writeSync(wfd, b, 0, n)
            at += n
          }
        } finally {
          closeSync(wfd)
        }
        out.push(rel)
      }
      return out
    }
    if (attempt === 5) {
      throw new DataError('E_BACKUP_SEGMENT', `the body segments ${missing.join(', ')} of data/broker.db went while it was copied, ${attempt} times.`, {hint: 'Try this: run the backup again.'})
    }
    release(held)
    for (const [id, fd] of holdSegments(dir)) held.set(id, fd)
    rmSync(stagedDb, {force: true})
    await sqliteSnapshot(join(root, 'data', 'broker.db'), stagedDb)
  }
}

function isSqlite(file: string): boolean {
  const fd = openSync(file, 'r')
  try {
    const b = Buffer.alloc(16)
    return readSync(fd, b, 0, 16, 0) === 16 && b.equals(SQLITE_MAGIC)
  } finally {
    closeSync(fd)
  }
}

function walk(root: string, rel: string, out: string[]): void {
  const abs = join(root, rel)
  if (!existsSync(abs)) return
  const st = lstatSync(abs)
  if (st.isSymbolicLink()) return
  if (st.isDirectory()) {
    for (const n of readdirSync(abs).sort()) walk(root, rel ? `${rel}/${n}` : n, out)
  } else if (st.isFile() && !SKIP.some((re) => re.test(rel))) out.push(rel)
}

function sha256File(file: string): {sha256: string; size: number} {
  const h = createHash('sha256')
  const fd = openSync(file, 'r')
  const b = Buffer.alloc(1 << 20)
  let size = 0
  try {
    for (;;) {
      const n = readSync(fd, b, 0, b.length, null)
      if (n === 0) break
      h.update(b.subarray(0, n))
      size += n
    }
  } finally {
    closeSync(fd)
  }
  return {sha256: h.digest('hex'), size}
}

function copyInto(src: string, dst: string): void {
  mkdirSync(dirname(dst), {mode: 0o700, recursive: true})
  writeAll(dst, readFileSync(src))
}

function writeAll(file: string, data: Buffer): void {
  const fd = openSync(file, 'w', 0o600)
  try {
    writeSync(fd, data)
  } finally {
    closeSync(fd)
  }
}

/** What an operator with a MySQL records store must dump alongside the archive. */
export function mysqlNote(url: string, recordsKeyIncluded: boolean): MysqlNote | null {
  const u = url.trim()
  if (!u.startsWith('mysql://') && !u.startsWith('mariadb://')) return null
  const p = new URL(u.replace(/^mariadb:/, 'mysql:'))
  const db = decodeURIComponent(p.pathname.slice(1))
  const user = decodeURIComponent(p.username) || 'root'
  const command = `mysqldump --single-transaction --routines --triggers --host ${p.hostname} --port ${p.port || '3306'} --user ${user}${p.password ? ' -p' : ''} ${db} > ${db}-records.sql`
  return {command, database: db, records_key_included: recordsKeyIncluded, url: redact(u)}
}

/** Copies one SQLite database with the online backup API, consistent even while a server writes to it. */
async function sqliteSnapshot(src: string, dst: string): Promise<void> {
  mkdirSync(dirname(dst), {mode: 0o700, recursive: true})
  const db = new Database(src, {fileMustExist: true, readonly: true})
  try {
    db.pragma('busy_timeout = 10000')
    // after the first step copy all remaining pages in one step: one read transaction, so a writer
    // committing meanwhile cannot make the backup restart over and over
    await db.backup(dst, {progress: ({remainingPages}) => Math.max(remainingPages, 100)})
  } finally {
    db.close()
  }
  chmodSync(dst, 0o600)
}

export async function createBackup(opts: {home: MqHome; config: MqConfig; file: string; passphrase: string}): Promise<BackupSummary> {
  const root = opts.home.root
  if (!existsSync(root)) throw new UsageError('E_BACKUP_NO_HOME', `there is no mq home at ${root}.`, {hint: 'Try this: --home DIR or MQ_HOME names the home to back up.'})
  const out = resolve(opts.file)
  if (out === root || out.startsWith(root + sep)) throw new UsageError('E_BACKUP_PATH', `the backup ${out} would be inside the home it backs up.`, {hint: 'Try this: write it outside the home.'})
  const stage = join(tmpdir(), `mq-backup-${process.pid}-${randomBytes(4).toString('hex')}`)
  mkdirSync(stage, {mode: 0o700})
  const tmpOut = `${out}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  try {
    const rels: string[] = []
    // pki first, under its lock: issuing or revoking waits for the copy
    const copyPki = () => {
      const pki: string[] = []
      walk(root, 'pki', pki)
      for (const r of pki) copyInto(join(root, r), join(stage, r))
      rels.push(...pki)
    }
    if (existsSync(opts.home.pki)) await new IndexStore(opts.home.pki).withLock(copyPki)
    const others: string[] = []
    for (const t of TOP.filter((t) => t !== 'pki')) walk(root, t, others)
    const sqlite: string[] = []
    // held before broker.db's snapshot: see copySegments
    const held = holdSegments(join(root, BODIES))
    try {
      for (const r of others.filter((r) => RELAY_JOURNAL.test(r))) {
        try {
          copyInto(join(root, r), join(stage, r))
          rels.push(r)
        } catch (error) {
          // the current file is renamed to .prev and a new one opened: if it went, it held nothing the database lacks
          if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
        }
      }
      for (const r of others) {
        if (r.startsWith(BODIES + '/') || RELAY_JOURNAL.test(r)) continue
        const src = join(root, r)
        if (isSqlite(src)) {
          await sqliteSnapshot(src, join(stage, r))
          sqlite.push(r)
        } else copyInto(src, join(stage, r))
        rels.push(r)
      }
      if (sqlite.includes('data/broker.db')) rels.push(...(await copySegments(root, stage, held)))
    } finally {
      release(held)
    }
    const files: ManifestFile[] = rels.sort().map((r) => {
      const {sha256, size} = sha256File(join(stage, r))
      return {kind: sqlite.includes(r) ? 'sqlite' : 'file', mode: statSync(join(root, r), {throwIfNoEntry: false})?.mode ?? 0o600, path: r, sha256, size}
    })
    for (const f of files) f.mode &= 0o777
    const mysql = mysqlNote(opts.config.store.url, rels.includes('secrets/records.key'))
    const manifest: Manifest = {created_at: new Date().toISOString(), files, format: 'mq-backup-manifest', mysql, source_home: root, version: 1}
    const mb = Buffer.from(JSON.stringify(manifest))
    const fd = openSync(tmpOut, 'wx', 0o600)
    try {
      const w = new ArchiveWriter(fd, opts.passphrase)
      const len = Buffer.alloc(4)
      len.writeUInt32BE(mb.length)
      w.push(len)
      w.push(mb)
      const b = Buffer.alloc(1 << 20)
      for (const f of files) {
        const rfd = openSync(join(stage, f.path), 'r')
        try {
          for (;;) {
            const n = readSync(rfd, b, 0, b.length, null)
            if (n === 0) break
            w.push(Buffer.from(b.subarray(0, n)))
          }
        } finally {
          closeSync(rfd)
        }
      }
      w.end()
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    chmodSync(tmpOut, 0o600)
    renameSync(tmpOut, out)
    return {bytes: files.reduce((s, f) => s + f.size, 0), created_at: manifest.created_at, file: out, files: files.length, mysql, sqlite}
  } finally {
    rmSync(stage, {force: true, recursive: true})
    try {
      unlinkSync(tmpOut)
    } catch {}
  }
}

function readManifest(s: PlainStream): Manifest {
  const len = s.take(4).readUInt32BE(0)
  if (len > 64 << 20) throw new DataError('E_BACKUP_CORRUPT', 'the backup manifest is too large.', {hint: 'Try this: use another copy of the backup.'})
  let m: Manifest
  try {
    m = JSON.parse(s.take(len).toString('utf8')) as Manifest
  } catch {
    throw new DataError('E_BACKUP_CORRUPT', 'the backup manifest is unreadable.', {hint: 'Try this: use another copy of the backup.'})
  }
  if (m.format !== 'mq-backup-manifest' || !Array.isArray(m.files)) throw new DataError('E_BACKUP_FORMAT', 'the archive holds no mq backup manifest.', {hint: 'Try this: give the file written by mq backup create.'})
  for (const f of m.files) {
    // a path from the archive must stay inside the home it is restored to
    if (typeof f.path !== 'string' || f.path.startsWith('/') || f.path.split('/').some((p) => p === '..' || p === '' || p === '.') || !Number.isSafeInteger(f.size) || f.size < 0) {
      throw new DataError('E_BACKUP_CORRUPT', `the backup manifest names a bad path ${JSON.stringify(f.path)}.`, {hint: 'Try this: use another copy of the backup.'})
    }
  }
  return m
}

function checked(s: PlainStream, f: ManifestFile, sink?: (piece: Buffer) => void): void {
  const h = createHash('sha256')
  s.pipe(f.size, (piece) => {
    h.update(piece)
    sink?.(piece)
  })
  if (h.digest('hex') !== f.sha256) throw new DataError('E_BACKUP_CHECKSUM', `${f.path} in the backup does not match its checksum.`, {hint: 'Try this: use another copy of the backup.'})
}

function summary(file: string, m: Manifest): BackupSummary {
  return {bytes: m.files.reduce((s, f) => s + f.size, 0), created_at: m.created_at, file: resolve(file), files: m.files.length, mysql: m.mysql, sqlite: m.files.filter((f) => f.kind === 'sqlite').map((f) => f.path)}
}

/** Decrypts and checks every chunk and every file checksum; writes nothing. */
export function verifyBackup(file: string, passphrase: string): BackupSummary {
  const r = new ArchiveReader(file, passphrase)
  try {
    const s = new PlainStream(r)
    const m = readManifest(s)
    for (const f of m.files) checked(s, f)
    s.end()
    return summary(file, m)
  } finally {
    r.close()
  }
}

function lockHolder(home: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(join(home, 'data', 'broker.lock'), 'utf8').trim(), 10)
    if (!Number.isInteger(pid) || pid <= 0) return undefined
    process.kill(pid, 0)
    return pid
  } catch {
    return undefined
  }
}

/**
 * Restores into `home`: everything is written to a staging directory inside it and checked first;
 * only a fully authenticated archive is moved into place.
 */
export function restoreBackup(opts: {file: string; home: string; passphrase: string; force?: boolean}): BackupSummary & {home: string} {
  const home = resolve(opts.home)
  const entries = existsSync(home) ? readdirSync(home) : []
  if (entries.length > 0 && !opts.force) {
    throw new UsageError('E_BACKUP_HOME_NOT_EMPTY', `${home} is not empty.`, {hint: 'Try this: restore into an empty directory, or add --force to replace the files the backup holds.'})
  }
  const pid = lockHolder(home)
  if (pid !== undefined) throw new MqError('E_DATA_LOCKED', `a broker (pid ${pid}) is running on ${home}.`, {exit: ExitCode.TEMPFAIL, hint: `Try this: stop it first (kill ${pid}).`})
  // a relay running on it would keep appending to a journal (and writing a relay.db) the restore unlinks
  const data = join(home, 'data')
  for (const f of existsSync(data) ? readdirSync(data) : []) {
    if (f.endsWith('.jnl.lock') && Journal.held(join(data, f.slice(0, -'.lock'.length)))) {
      throw new MqError('E_RELAY_JOURNAL_LOCKED', `a relay is running on ${home} (it holds data/${f}).`, {exit: ExitCode.TEMPFAIL, hint: 'Try this: stop `mq relay start` on this home first.'})
    }
  }
  mkdirSync(home, {mode: 0o700, recursive: true})
  const stage = join(home, `.restore-${process.pid}-${randomBytes(4).toString('hex')}`)
  mkdirSync(stage, {mode: 0o700})
  const r = new ArchiveReader(opts.file, opts.passphrase)
  try {
    const s = new PlainStream(r)
    const m = readManifest(s)
    for (const f of m.files) {
      const dst = join(stage, f.path)
      mkdirSync(dirname(dst), {mode: 0o700, recursive: true})
      const fd = openSync(dst, 'w', 0o600)
      try {
        checked(s, f, (piece) => writeSync(fd, piece))
        fsyncSync(fd)
      } finally {
        closeSync(fd)
      }
      // keys and secrets stay 0600; public files get their recorded mode but never group/other write
      chmodSync(dst, f.mode & 0o644 || 0o600)
    }
    s.end()
    // a restored relay.db must not meet the journal of the one it replaces (its records would be
    // replayed into it); the archive's own journal, if any, is put back below
    for (const f of m.files.filter((f) => f.kind === 'sqlite' && /^data\/[^/]+\.db$/.test(f.path))) {
      const jnl = join(home, f.path.replace(/\.db$/, '.jnl'))
      for (const side of ['', '.prev']) rmSync(jnl + side, {force: true})
    }
    for (const f of m.files) {
      const dst = join(home, f.path)
      mkdirSync(dirname(dst), {mode: 0o700, recursive: true})
      // a restored database must not meet the WAL of the one it replaces
      if (f.kind === 'sqlite') for (const side of ['-wal', '-shm', '-journal']) rmSync(dst + side, {force: true})
      renameSync(join(stage, f.path), dst)
    }
    for (const d of ['secrets', 'data', 'pki', 'keys', 'relay']) if (existsSync(join(home, d))) chmodSync(join(home, d), 0o700)
    return {...summary(opts.file, m), home}
  } finally {
    r.close()
    rmSync(stage, {force: true, recursive: true})
  }
}
