/**
 * Body segments: big bodies of durable messages (GROUP_BODY_MAX or more, the rows sealed on their own)
 * live in append-only files data/bodies/NNNNNN.seg instead of broker.db. In SQLite a big body was
 * written twice (WAL, then the checkpoint) and read back to walk its overflow chain when its row was
 * deleted; here it is written once and a segment goes with its last row as a whole file. Sealed groups of
 * small messages of GROUP_SEGMENT_MIN bytes or more (store.ts) go to segments too, of their own (LANE_GROUPS),
 * when their commit is big enough (GROUP_SEGMENT_COMMIT_MIN).
 *
 * What is on disk is only the body's AES-256-GCM ciphertext (sealSplit: the row keeps nonce, sealed
 * headers and tag, and the associated data binds the row's identity), never plaintext. Crash safety:
 * - the writer fdatasyncs the segment (and, for a new segment, the directory) BEFORE the commit whose
 *   rows point at it, so a committed row never points at bytes that are not on disk;
 * - body_segments (id, live rows, committed end) is written in that same commit; bytes after `end`
 *   (a torn tail: appended, then a crash or a rolled back commit) are truncated at open, and a file
 *   without a row or without live rows (its last row went, then a crash before the unlink) is removed;
 * - a new writer never appends to an old segment: it starts the next id, above every id made before
 *   (meta 'segments_made'), so a name is never another file's, not even after a restart;
 * - bytes are never rewritten: a segment is appended to until it is rolled or goes, never cut and reused;
 * - a segment is only unlinked after the commit that dropped its last row, which relies on that
 *   commit being durable when it returns (synchronous=FULL, what the broker runs with): under NORMAL a
 *   power loss could bring back rows whose bytes are gone (they would be reported unreadable).
 */
import {closeSync, existsSync, fdatasyncSync, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readdirSync, readSync, unlinkSync, writeSync} from 'node:fs'
import {join} from 'node:path'

import type Database from 'better-sqlite3'

/** a segment is rolled once it holds this many bytes (so an old one can go while new bodies arrive) */
export const SEGMENT_MAX_BYTES = 64 * 1024 * 1024
/**
 * Sealed groups of small messages (store.ts, GROUP_SEGMENT_MIN) go to segments of their own, rolled at
 * this size: a group mixes queues, so one message left unacked in a slow queue keeps its group's whole
 * segment on disk. At 64 MiB a trickle into an unconsumed queue kept every segment of the busy queues
 * beside it; at 4 MiB a message keeps at most 4 MiB (a group in broker.db kept its 1 MiB before).
 */
export const GROUP_SEGMENT_MAX_BYTES = 4 * 1024 * 1024
/** the lanes of append(): big bodies, and sealed groups */
export const LANE_BODIES = 0
export const LANE_GROUPS = 1
/** the segment being appended to, once emptied, is kept (dead bytes and all) below this size, and goes at or above it */
export const EMPTIED_KEEP_BYTES = 8 * 1024 * 1024

export const SEGMENT_SCHEMA = `
-- body segments (body-segments.ts): live = rows pointing at the file, end = bytes committed in it
CREATE TABLE IF NOT EXISTS body_segments (id INTEGER PRIMARY KEY, live INTEGER NOT NULL, end INTEGER NOT NULL);
`

export function segmentDir(dataDir: string): string {
  return join(dataDir, 'bodies')
}

export function segmentFile(dir: string, id: number): string {
  return join(dir, `${String(id).padStart(6, '0')}.seg`)
}

/** meta key of the highest segment id made */
const MADE_KEY = 'segments_made'

const SEG_NAME = /^(\d{6,})\.seg$/

/** the segment id of a file name in the segment directory, or undefined for any other file */
export function segmentId(name: string): number | undefined {
  const m = SEG_NAME.exec(name)
  return m ? Number(m[1]) : undefined
}

/**
 * Run at open, before the writer starts: removes segments no committed row points at, truncates torn
 * tails, and returns what it found wrong (a segment shorter than its committed end: rows in it will be
 * reported unreadable when read). Returns the highest segment id seen (the writer starts above it).
 */
export function recoverSegments(db: Database.Database, dir: string): {maxId: number; removed: number[]; truncated: number[]; short: number[]} {
  mkdirSync(dir, {mode: 0o700, recursive: true})
  const rows = new Map<number, {live: number; end: number}>()
  for (const r of db.prepare('SELECT id, live, end FROM body_segments').all() as {id: number; live: number; end: number}[]) rows.set(r.id, r)
  let maxId = 0
  const removed: number[] = []
  const truncated: number[] = []
  const short: number[] = []
  for (const name of readdirSync(dir)) {
    const id = segmentId(name)
    if (id === undefined) continue
    if (id > maxId) maxId = id
    const r = rows.get(id)
    const file = join(dir, name)
    if (!r || r.live <= 0) {
      unlinkSync(file)
      removed.push(id)
      continue
    }
    const fd = openSync(file, 'r+')
    try {
      const size = fstatSync(fd).size
      if (size > r.end) {
        ftruncateSync(fd, r.end)
        fdatasyncSync(fd)
        truncated.push(id)
      } else if (size < r.end) short.push(id)
    } finally {
      closeSync(fd)
    }
  }
  // the highest id ever made, also one removed since (see SegmentWriter.made)
  const made = Number((db.prepare(`SELECT v FROM meta WHERE k = '${MADE_KEY}'`).pluck().get() as string | undefined) ?? 0)
  if (made > maxId) maxId = made
  for (const [id, r] of rows) {
    if (id > maxId) maxId = id
    if (r.live > 0 && !existsSync(segmentFile(dir, id))) short.push(id)
  }
  if (removed.length > 0) fsyncDir(dir)
  // a file removed here (never committed) counts as made too
  if (maxId > made) db.prepare(`INSERT INTO meta (k, v) VALUES ('${MADE_KEY}', ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v`).run(String(maxId))
  return {maxId, removed, short, truncated}
}

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/**
 * The writer thread's side: appends sealed bodies, keeps live rows per segment for the transaction
 * being applied, and removes empty segments after the commit that emptied them.
 */
export class SegmentWriter {
  /** the segment being appended to, per lane (see LANE_BODIES, LANE_GROUPS) */
  private readonly active: ({id: number; fd: number; size: number} | undefined)[] = [undefined, undefined]
  /** fds written in the current transaction, to fdatasync before its commit */
  private unsynced = new Set<number>()
  /** live rows per touched segment (read from body_segments when first touched) */
  private readonly live = new Map<number, number>()
  private readonly dirty = new Set<number>()
  /** end of committed bytes per segment touched by an append in this transaction */
  private readonly ends = new Map<number, number>()
  /** segments emptied by the transaction being applied: unlinked once it commits */
  private emptied: number[] = []
  private readonly getLive: Database.Statement
  private readonly upsert: Database.Statement
  private readonly drop: Database.Statement
  private readonly setMade: Database.Statement
  /**
   * Highest segment id made, and the one written to meta by the commit under way: an id is never
   * made twice, not even after a restart that found its file removed (emptied, then a clean stop or a
   * crash), so a file held open under a name (a backup's copy) is never another file of the same name.
   */
  private made: number
  private madeRecorded: number
  private madeWriting = 0

  constructor(
    db: Database.Database,
    private readonly dir: string,
    private nextId: number,
  ) {
    this.getLive = db.prepare('SELECT live FROM body_segments WHERE id = ?').pluck()
    this.upsert = db.prepare('INSERT INTO body_segments (id, live, end) VALUES (?,?,?) ON CONFLICT(id) DO UPDATE SET live = excluded.live, end = MAX(end, excluded.end)')
    this.drop = db.prepare('DELETE FROM body_segments WHERE id = ?')
    this.setMade = db.prepare(`INSERT INTO meta (k, v) VALUES ('${MADE_KEY}', ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v`)
    this.made = this.madeRecorded = nextId - 1
  }

  /** Appends a sealed body (or group, lane LANE_GROUPS); returns [segment id, offset]. Durable only after beforeCommit(). */
  append(bytes: Uint8Array, lane = LANE_BODIES): [number, number] {
    let a = this.active[lane]
    if (a && a.size > 0 && a.size + bytes.length > (lane === LANE_GROUPS ? GROUP_SEGMENT_MAX_BYTES : SEGMENT_MAX_BYTES)) {
      // rolled: its bytes of this transaction must still reach the disk before the commit
      if (this.unsynced.delete(a.fd)) fdatasyncSync(a.fd)
      closeSync(a.fd)
      a = this.active[lane] = undefined
    }
    if (!a) {
      const id = this.nextId++
      this.made = id
      const fd = openSync(segmentFile(this.dir, id), 'wx', 0o600)
      // the file's name must be on disk before a commit points at it
      fsyncDir(this.dir)
      a = this.active[lane] = {fd, id, size: 0}
    }
    const at = a.size
    let done = 0
    while (done < bytes.length) done += writeSync(a.fd, bytes, done, bytes.length - done, at + done)
    a.size += bytes.length
    this.unsynced.add(a.fd)
    this.ends.set(a.id, a.size)
    this.counted(a.id, 1)
    return [a.id, at]
  }

  /** n rows pointing at segment id went */
  released(id: number, n = 1): void {
    this.counted(id, -n)
  }

  private counted(id: number, n: number): void {
    let v = this.live.get(id)
    if (v === undefined) v = (this.getLive.get(id) as number | undefined) ?? 0
    this.live.set(id, v + n)
    this.dirty.add(id)
  }

  /** Inside the transaction, last: the segments' bytes reach the disk, then their rows are written. */
  beforeCommit(): void {
    for (const fd of this.unsynced) fdatasyncSync(fd)
    this.unsynced.clear()
    if (this.made > this.madeRecorded) {
      this.setMade.run(String(this.made))
      this.madeWriting = this.made
    }
    for (const id of this.dirty) {
      const n = this.live.get(id)!
      if (n > 0) this.upsert.run(id, n, this.ends.get(id) ?? 0)
      else {
        this.drop.run(id)
        this.live.delete(id)
        this.emptied.push(id)
      }
    }
    this.dirty.clear()
    this.ends.clear()
  }

  /**
   * After the commit: the files of emptied segments go (a crash before this leaves them to
   * recoverSegments). The one being appended to stays and is appended to further, below
   * EMPTIED_KEEP_BYTES: a consumer that keeps up empties it at every commit, and a new file each time
   * (create, fsync of the directory, unlink) cost more than the SQLite path it replaces at 64 KiB. It is
   * never cut and rewritten from offset 0: a byte a committed row pointed at keeps its value while the
   * file exists, which a backup holding the file open across broker.db's snapshot relies on (it copies
   * each segment up to the end its snapshot committed: rewritten bytes would be another row's body).
   * Its row went in the commit, so a crash from here on leaves a file no row points at, which
   * recoverSegments removes.
   */
  afterCommit(): number[] {
    if (this.madeWriting > this.madeRecorded) this.madeRecorded = this.madeWriting
    const gone: number[] = []
    for (const id of this.emptied) {
      const lane = this.active.findIndex((x) => x?.id === id)
      if (lane >= 0) {
        const a = this.active[lane]!
        if (a.size < EMPTIED_KEEP_BYTES) continue
        closeSync(a.fd)
        this.active[lane] = undefined
      }
      gone.push(id)
      try {
        unlinkSync(segmentFile(this.dir, id))
      } catch {}
    }
    this.emptied = []
    return gone
  }

  /** The transaction rolled back: forget its counts (the database tells them again); its bytes stay as an unreferenced tail. */
  rolledBack(): void {
    this.live.clear()
    this.dirty.clear()
    this.ends.clear()
    this.emptied = []
    this.unsynced.clear()
  }

  /** at a clean stop, an empty active segment goes (no row points at it) */
  close(): void {
    for (let lane = 0; lane < this.active.length; lane++) {
      const a = this.active[lane]
      if (!a) continue
      closeSync(a.fd)
      this.active[lane] = undefined
      const live = this.live.get(a.id) ?? ((this.getLive.get(a.id) as number | undefined) ?? 0)
      if (live <= 0) {
        try {
          unlinkSync(segmentFile(this.dir, a.id))
        } catch {}
      }
    }
  }
}

/** The reading side (the broker's event loop): one pread per body, fds kept open until their segment goes. */
export class SegmentReader {
  private readonly fds = new Map<number, number>()
  constructor(private readonly dir: string) {}

  read(id: number, offset: number, length: number): Buffer {
    const out = Buffer.allocUnsafe(length)
    this.readInto(id, offset, length, out, 0)
    return out
  }

  /** read() into dst[at..] (a caller's reused buffer) */
  readInto(id: number, offset: number, length: number, dst: Buffer, at: number): void {
    let fd = this.fds.get(id)
    if (fd === undefined) {
      fd = openSync(segmentFile(this.dir, id), 'r')
      this.fds.set(id, fd)
      // a few segments are read at a time (paging reads a queue in order): a bound, not a cache policy
      if (this.fds.size > 32) {
        const [oldId, oldFd] = this.fds.entries().next().value as [number, number]
        this.fds.delete(oldId)
        closeSync(oldFd)
      }
    }
    let done = 0
    while (done < length) {
      const n = readSync(fd, dst, at + done, length - done, offset + done)
      if (n === 0) throw new Error(`segment ${id} ends before its body (${offset + done} of ${offset + length} bytes)`)
      done += n
    }
  }

  /** the writer removed these segments: their fds would keep the disk space */
  gone(ids: number[]): void {
    for (const id of ids) {
      const fd = this.fds.get(id)
      if (fd === undefined) continue
      this.fds.delete(id)
      closeSync(fd)
    }
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd)
    this.fds.clear()
  }
}
