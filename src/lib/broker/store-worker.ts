/**
 * The broker store's writer thread: it owns the only write connection to broker.db and commits
 * the batches it receives in transactions (synchronous=FULL: one fsync per commit), each commit
 * taking every batch queued by then, so disk latency never blocks the broker's event loop. See
 * store.ts for the batching side.
 * It also seals each message row (headers and body, AES-256-GCM under the store key) as it builds it,
 * so the encryption cost stays off the event loop and plaintext never reaches broker.db or its WAL.
 */
import Database from 'better-sqlite3'
import {parentPort, receiveMessageOnPort, workerData} from 'node:worker_threads'

import {setFallbackAutocheckpoint} from '../store/checkpointer.js'
import {LANE_GROUPS, SegmentWriter} from './body-segments.js'

import {GROUP_BODY_MAX, GROUP_BYTES_MAX, GROUP_SEGMENT_COMMIT_MIN, GROUP_SEGMENT_MIN, REC_COUNT, REC_DELETE, REC_DELETE_BIG, REC_INSERT, REC_INSERT_SHARED, STORE_CACHE_KIB, type WireOp, readInsertRecord, recordEnd, rowAad, sealRecord, StoreSealer} from './store.js'

/** what deleted rows leave to account for, per queue, group and segment: queue, group id, segment, rows, bytes */
type DeletedSums = [string, number | null, number | null, number, number | null]

const {file, synchronous, key: sealKey, keyId: sealKeyId, segmentDir, segmentStart} = workerData as {file: string; synchronous: 'FULL' | 'NORMAL'; key?: Uint8Array; keyId?: number; segmentDir: string; segmentStart: number}
const db = new Database(file)
db.pragma('journal_mode = WAL')
db.pragma(`synchronous = ${synchronous}`)
// the writer appends and deletes by seq: it needs no more cache than the reader (see store.ts)
db.pragma(`cache_size = ${STORE_CACHE_KIB}`)

startWriter()

function startWriter(): void {
  // the checkpointer thread does the work; this is only a fallback if it falls far behind (64 MiB)
  setFallbackAutocheckpoint(db)

  if (!sealKey || sealKeyId === undefined) throw new Error('the store writer needs the store key')
  const storeKey = sealKey
  const storeKeyId = sealKeyId
  // the store key is fixed for this thread's life: set up once (native addon when it loads here, else node:crypto)
  const sealer = new StoreSealer(storeKey, storeKeyId)
  const segments = new SegmentWriter(db, segmentDir, segmentStart)
  const insRow = db.prepare("INSERT INTO messages (seq, queue, message_id, exchange, routing_key, headers, body, ts, delivery_count, expires_at, key_id, size, seg, seg_off) VALUES (?,?,?,?,?,?,x'',?,?,?,?,?,?,?)")
  const empty = new Uint8Array(0)
  /**
   * every message row is sealed here: headers and body only ever reach the database encrypted. A row
   * of its own (a body of GROUP_BODY_MAX or more) is sealed split (sealSplit): its body's ciphertext is
   * appended to a body segment (body-segments.ts), the row keeps the head and where the body is
   */
  const ins = {
    run(seq: number, queueName: string, messageId: string, exchange: string, routingKey: string, headers: Uint8Array | string | null, body: Uint8Array, ts: number, count: number, expires: number) {
      const h = typeof headers === 'string' ? Buffer.from(headers, 'utf8') : (headers ?? empty)
      // sealed.body is the sealer's reused buffer: written out here, before anything seals again
      const sealed = sealer.split(rowAad(storeKeyId, messageId, queueName, exchange, routingKey), h, body)
      const [seg, at] = segments.append(sealed.body)
      insRow.run(seq, queueName, messageId, exchange, routingKey, sealed.head, ts, count, expires, storeKeyId, body.length, seg, at)
      counted(queueName, 1, body.length)
    },
  }
  // RETURNING gives the queue and size of the row that went, for the per-queue index (queue_stats)
  // the columns of rowsDeleted()'s sums, for one row
  const delRow = db.prepare('DELETE FROM messages WHERE seq = ? RETURNING queue, group_id, seg, 1, COALESCE(size, length(body))').raw(true)

  // ---- the per-queue index (queue_stats): what a restart reads instead of the messages ----
  /** message and byte deltas per queue of the transaction being applied, written once at its end */
  const deltas = new Map<string, [number, number]>()
  function counted(queueName: string, n: number, bytes: number): void {
    const d = deltas.get(queueName)
    if (d) {
      d[0] += n
      d[1] += bytes
    } else deltas.set(queueName, [n, bytes])
  }
  const statsUpsert = db.prepare('INSERT INTO queue_stats (queue, messages, bytes) VALUES (?,?,?) ON CONFLICT(queue) DO UPDATE SET messages = messages + excluded.messages, bytes = bytes + excluded.bytes')
  const statsDrop = db.prepare('DELETE FROM queue_stats WHERE queue = ?')
  function writeDeltas(): void {
    for (const [q, [n, bytes]] of deltas) if (n !== 0 || bytes !== 0) statsUpsert.run(q, n, bytes)
    deltas.clear()
  }

  // ---- sealed groups (see sealGroup in store.ts) ----
  // the key id is this thread's for its whole life: a literal in the statement, not a bind per row
  // (an integer the broker computed, never text from outside)
  const kid = String(Math.trunc(Number(sealKeyId)))
  const insGrouped = db.prepare(`INSERT INTO messages (seq, queue, message_id, exchange, routing_key, headers, body, ts, delivery_count, expires_at, key_id, group_id, size) VALUES (?,?,?,?,?,NULL,x'',?,?,?,${kid},?,?)`)
  const INSERT_CHUNK = 32
  const insGroupedChunk = db.prepare(
    'INSERT INTO messages (seq, queue, message_id, exchange, routing_key, headers, body, ts, delivery_count, expires_at, key_id, group_id, size) VALUES ' +
      Array.from({length: INSERT_CHUNK}, () => `(?,?,?,?,?,NULL,x'',?,?,?,${kid},?,?)`).join(','),
  )
  const chunkArgs: unknown[] = new Array(INSERT_CHUNK * 10)
  const insGroup = db.prepare('INSERT INTO sealed_groups (id, key_id, data, live) VALUES (?,?,?,?)')
  const insSegGroup = db.prepare("INSERT INTO sealed_groups (id, key_id, data, live, seg, seg_off, seg_len) VALUES (?,?,x'',?,?,?,?)")
  // seg: a group in a body segment (GROUP_SEGMENT_MIN), released when the group goes
  const delGroup = db.prepare('DELETE FROM sealed_groups WHERE id = ? RETURNING seg').pluck()
  const queueGroupRows = db.prepare('SELECT group_id, seg FROM messages WHERE queue = ? AND (group_id IS NOT NULL OR seg IS NOT NULL)')
  /**
   * How many rows each group still has (sealed_groups.live): a group goes with its last row. Read from
   * the table when a group is first touched and written back at the end of each transaction, so the
   * writer holds one number per touched group, not an entry per stored row: a backlog of a million
   * messages costs neither memory here nor a scan at start (the row's group comes back from its DELETE).
   */
  const live = new Map<number, number>()
  const dirty = new Set<number>()
  const groupLive = db.prepare('SELECT live FROM sealed_groups WHERE id = ?')
  const setLive = db.prepare('UPDATE sealed_groups SET live = ? WHERE id = ?')
  /** at start, and after a failed (rolled back) commit: forget what the database will tell again */
  function loadGroups(): void {
    live.clear()
    dirty.clear()
    pendingCount = 0
    pendingBytes = 0
    spanBuf = undefined
    plainAt = 0
    pendingMin = Infinity
    pendingMax = -Infinity
  }
  function writeLive(): void {
    for (const g of dirty) setLive.run(live.get(g), g)
    dirty.clear()
  }
  // rows and their group come and go in one transaction; this only sweeps up groups left without rows
  // (a swept group in a body segment releases it, in the same transaction as the segment's count)
  const swept = db.prepare('DELETE FROM sealed_groups WHERE live <= 0 RETURNING seg').pluck()
  db.transaction(() => {
    for (const seg of swept.all() as (number | null)[]) if (seg !== null) segments.released(seg)
    segments.beforeCommit()
  })()
  segments.afterCommit()
  const maxGroup = db.prepare('SELECT MAX(id) AS m FROM sealed_groups')
  let nextGroup = 1
  /**
   * The pending group: its rows' columns flat, ROW_FIELDS per row (seq, queue, message id, exchange,
   * routing key, ts, delivery count, expires at, size), in one array reused from group to group, and
   * its records copied into plainBuf a contiguous span of the packed run at a time. An array and a
   * subarray per message, and a Set of the group's seqs, were a fifth of the writer's JS at 256 B.
   */
  const ROW_FIELDS = 9
  const pendingRows: (number | string)[] = []
  let pendingCount = 0
  let pendingBytes = 0
  /** the group's seqs lie in [pendingMin, pendingMax] (see flushIfPending) */
  let pendingMin = Infinity
  let pendingMax = -Infinity
  /** a group's plaintext records (see flushGroup); a record of a body just under GROUP_BODY_MAX can end past GROUP_BYTES_MAX */
  let plainBuf = Buffer.allocUnsafeSlow(GROUP_BYTES_MAX + GROUP_BODY_MAX + 4096)
  /** bytes of plainBuf filled, and the span of the current run not yet copied there */
  let plainAt = 0
  /** whether this transaction's big groups go to a segment (see GROUP_SEGMENT_COMMIT_MIN) */
  let segmentGroups = true
  let spanBuf: Buffer | undefined
  let spanStart = 0
  let spanEnd = 0
  loadGroups()
  nextGroup = ((maxGroup.get() as {m: number | null}).m ?? 0) + 1

  /** a record of buf[start, end) joins the pending group: it extends the open span when it follows it */
  function addRecord(buf: Buffer, start: number, end: number): void {
    if (buf === spanBuf && start === spanEnd) spanEnd = end
    else {
      closeSpan()
      spanBuf = buf
      spanStart = start
      spanEnd = end
    }
    pendingBytes += end - start
  }

  /**
   * the open span's records are copied into plainBuf, one reused buffer (its pages stay mapped): a
   * fresh one per group (Buffer.concat) page-faulted its memory in each time
   */
  function closeSpan(): void {
    if (spanBuf === undefined) return
    const n = spanEnd - spanStart
    if (plainAt + n > plainBuf.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(plainAt + n, 2 * plainBuf.length))
      plainBuf.copy(grown, 0, 0, plainAt)
      plainBuf = grown
    }
    spanBuf.copy(plainBuf, plainAt, spanStart, spanEnd)
    plainAt += n
    spanBuf = undefined
  }

  function pushRow(seq: number, queueName: string, messageId: string, exchange: string, routingKey: string, ts: number, count: number, expires: number, size: number): void {
    let k = pendingCount * ROW_FIELDS
    pendingRows[k++] = seq
    pendingRows[k++] = queueName
    pendingRows[k++] = messageId
    pendingRows[k++] = exchange
    pendingRows[k++] = routingKey
    pendingRows[k++] = ts
    pendingRows[k++] = count
    pendingRows[k++] = expires
    pendingRows[k] = size
    pendingCount++
    if (seq < pendingMin) pendingMin = seq
    if (seq > pendingMax) pendingMax = seq
  }

  /**
   * A delete or count of a row still waiting in the pending group closes the group first (it is not
   * in broker.db yet). Its seqs are not kept one by one: a seq within their range closes it, which
   * for any seq not in it only means a smaller group.
   */
  function flushIfPending(seq: number): void {
    if (seq >= pendingMin && seq <= pendingMax) flushGroup()
  }

  function flushGroup(): void {
    if (pendingCount === 0) return
    closeSpan()
    const id = nextGroup++
    const n = pendingCount
    // a view of the sealer's reused buffer: the segment write or the bind (SQLite copies it) uses it now
    const sealed = sealer.group(id, plainBuf.subarray(0, plainAt))
    if (segmentGroups && sealed.length >= GROUP_SEGMENT_MIN) {
      const [seg, off] = segments.append(sealed, LANE_GROUPS)
      insSegGroup.run(id, storeKeyId, n, seg, off, sealed.length)
    } else insGroup.run(id, storeKeyId, sealed, n)
    const rows = pendingRows
    let i = 0
    // INSERT_CHUNK rows per statement: a statement's fixed cost (bind, step, reset) was half of an insert
    for (; i + INSERT_CHUNK <= n; i += INSERT_CHUNK) {
      let k = 0
      for (let r = i * ROW_FIELDS, end = (i + INSERT_CHUNK) * ROW_FIELDS; r < end; r += ROW_FIELDS) {
        chunkArgs[k++] = rows[r]
        chunkArgs[k++] = rows[r + 1]
        chunkArgs[k++] = rows[r + 2]
        chunkArgs[k++] = rows[r + 3]
        chunkArgs[k++] = rows[r + 4]
        chunkArgs[k++] = rows[r + 5]
        chunkArgs[k++] = rows[r + 6]
        chunkArgs[k++] = rows[r + 7]
        chunkArgs[k++] = id
        chunkArgs[k++] = rows[r + 8]
      }
      insGroupedChunk.run(chunkArgs)
    }
    for (; i < n; i++) {
      const r = i * ROW_FIELDS
      insGrouped.run(rows[r], rows[r + 1], rows[r + 2], rows[r + 3], rows[r + 4], rows[r + 5], rows[r + 6], rows[r + 7], id, rows[r + 8])
    }
    // the per-queue deltas: one Map update per run of rows of the same queue
    let q = rows[1] as string
    let qn = 0
    let qb = 0
    for (let r = 0; r < n * ROW_FIELDS; r += ROW_FIELDS) {
      if (rows[r + 1] !== q) {
        counted(q, qn, qb)
        q = rows[r + 1] as string
        qn = qb = 0
      }
      qn++
      qb += rows[r + 8] as number
    }
    counted(q, qn, qb)
    live.set(id, n)
    pendingCount = 0
    pendingBytes = 0
    plainAt = 0
    pendingMin = Infinity
    pendingMax = -Infinity
  }

  /** a row of group g went: the group goes with its last row */
  /** k rows of group g went: the group goes with its last row */
  function rowGone(g: number | null, k = 1): void {
    if (g === null) return
    let n = live.get(g)
    if (n === undefined) n = (groupLive.get(g) as {live: number | null} | undefined)?.live ?? k
    n -= k
    if (n > 0) {
      live.set(g, n)
      dirty.add(g)
    } else {
      live.delete(g)
      dirty.delete(g)
      groupDeletes.push(g)
    }
  }
  /**
   * Emptied groups go at the end of the transaction, after its inserts (as big deletes do, see
   * deleteBig): the pages of a group deleted mid-transaction were read back from disk when a new
   * group of the same transaction reused them.
   */
  let groupDeletes: number[] = []
  function deleteGroups(): void {
    const d = groupDeletes
    groupDeletes = []
    for (const g of d) {
      const seg = delGroup.get(g) as number | null | undefined
      if (seg != null) segments.released(seg)
    }
  }

  // a row sealed on its own (body GROUP_BODY_MAX or more) belongs to no group, and the engine sent its size
  // (RETURNING loads the whole row, body included, into the page cache; deleting it reads every
  // overflow page anyway, to walk the chain, and then finds them there. A SELECT of the queue before a
  // plain DELETE measured the same, and would start a transaction of acks with a read, which SQLite
  // does not retry when another connection holds the write lock.)
  // (a row whose body is in a segment has no overflow chain: its seg comes back at no cost)
  const delBigRow = db.prepare('DELETE FROM messages WHERE seq = ? RETURNING queue, seg').raw(true)
  /**
   * Big deletes wait for the end of the transaction: pages freed in a transaction are read back from
   * disk when an insert of the same transaction reuses them (SQLite keeps their content for a
   * rollback), a pread of every page of the acked body before the new body overwrote it. Freed after
   * the inserts, the next commit's inserts take them without a read. Later in the same transaction
   * is still after the row's insert, and nothing but a delete touches a row once it is acked.
   */
  let bigDeletes: number[] = []
  const delBig = (seq: number, size: number) => {
    bigDeletes.push(seq, size)
  }
  function deleteBig(): void {
    const d = bigDeletes
    bigDeletes = []
    for (let i = 0; i < d.length; i += 2) {
      const r = delBigRow.get(d[i]) as [string, number | null] | undefined
      if (r === undefined) continue
      counted(r[0], -1, -d[i + 1])
      if (r[1] !== null) segments.released(r[1])
    }
  }
  function deleteOne(seq: number): void {
    const r = delRow.get(seq) as DeletedSums | undefined
    if (r) rowsDeleted([r])
  }
  /**
   * Acks' deletes, DELETE_CHUNK rows per statement: one statement per acked message (bind, step,
   * reset) was the writer's largest item at 256 B, more than the grouped inserts. A short chunk is
   * padded with seq 0, which no row has (seqs start at 1).
   */
  const DELETE_CHUNK = 32
  const inList = `(${Array.from({length: DELETE_CHUNK}, () => '?').join(',')})`
  /**
   * What the deleted rows leave to account for (see rowsDeleted), summed per queue, group and segment
   * by one SELECT before a DELETE without RETURNING. RETURNING a row per deleted message (an array
   * and the queue's string built per row) cost 1.4 us per row deleted as a range and 3.1 us in an
   * IN list; this SELECT and DELETE 0.56 and 0.95 (200,000 rows of one queue, in-process).
   */
  const SUMS = 'SELECT queue, group_id, seg, COUNT(*), SUM(COALESCE(size, length(body))) FROM messages WHERE '
  const GROUPED = ' GROUP BY queue, group_id, seg'
  const chunkSums = db.prepare(`${SUMS}seq IN ${inList}${GROUPED}`).raw(true)
  const delChunk = db.prepare(`DELETE FROM messages WHERE seq IN ${inList}`)
  /**
   * Consecutive seqs (a consumer acks its queue in order, and a queue's seqs are consecutive when it
   * is the only one published to) go as one range: one seek and a walk along the leaves instead of a
   * seek per row and a statement per DELETE_CHUNK. The range holds exactly the seqs asked for.
   */
  const rangeSums = db.prepare(`${SUMS}seq >= ? AND seq <= ?${GROUPED}`).raw(true)
  const delRange = db.prepare('DELETE FROM messages WHERE seq >= ? AND seq <= ?')
  const DELETE_RANGE_MIN = 8
  /** what deleted rows leave to account for: their queue's counts, their group's live rows, their segment's */
  function rowsDeleted(sums: DeletedSums[]): void {
    for (const [queueName, group, seg, n, bytes] of sums) {
      counted(queueName, -n, -(bytes ?? 0))
      rowGone(group, n)
      if (seg !== null) segments.released(seg, n)
    }
  }
  const delSeqs: number[] = new Array(DELETE_CHUNK).fill(0)
  /** seqs queued for deletion, in arrival order; deleteQueued() runs them */
  const delQueue: number[] = []
  let delCount = 0
  const DELETE_QUEUE_MAX = 4096
  /** queues a delete; deleteQueued() runs them (before anything that could read or rewrite the rows) */
  function deleteLater(seq: number): void {
    delQueue[delCount++] = seq
    if (delCount === DELETE_QUEUE_MAX) deleteQueued()
  }
  function deleteQueued(): void {
    if (delCount === 0) return
    let fill = 0
    for (let i = 0; i < delCount; ) {
      let j = i + 1
      while (j < delCount && delQueue[j] === delQueue[j - 1] + 1) j++
      if (j - i >= DELETE_RANGE_MIN) {
        rowsDeleted(rangeSums.all(delQueue[i], delQueue[j - 1]) as DeletedSums[])
        delRange.run(delQueue[i], delQueue[j - 1])
      } else {
        for (let k = i; k < j; k++) {
          delSeqs[fill++] = delQueue[k]
          if (fill === DELETE_CHUNK) {
            deleteChunk(fill)
            fill = 0
          }
        }
      }
      i = j
    }
    if (fill > 0) deleteChunk(fill)
    delCount = 0
  }
  /** a short chunk is padded with seq 0, which no row has (seqs start at 1) */
  function deleteChunk(fill: number): void {
    if (fill === 1) deleteOne(delSeqs[0])
    else {
      delSeqs.fill(0, fill)
      rowsDeleted(chunkSums.all(delSeqs) as DeletedSums[])
      delChunk.run(delSeqs)
    }
  }
  const cnt = db.prepare('UPDATE messages SET delivery_count = ? WHERE seq = ?')
  const exch = db.prepare('INSERT OR REPLACE INTO exchanges (name, type) VALUES (?, ?)')
  const queue = db.prepare('INSERT OR REPLACE INTO queues (name, dead_letter, ttl_ms, max_length) VALUES (?,?,?,?)')
  const bind = db.prepare('INSERT OR IGNORE INTO bindings (exchange, queue, routing_key) VALUES (?,?,?)')
  const dq = [db.prepare('DELETE FROM queues WHERE name = ?'), db.prepare('DELETE FROM bindings WHERE queue = ?'), db.prepare('DELETE FROM messages WHERE queue = ?')]
  const dx = [db.prepare('DELETE FROM exchanges WHERE name = ?'), db.prepare('DELETE FROM bindings WHERE exchange = ?')]
  const unbind = db.prepare('DELETE FROM bindings WHERE exchange = ? AND queue = ? AND routing_key = ?')
  const key = db.prepare('INSERT OR REPLACE INTO keys (name, enc_cert, sign_cert, updated_at) VALUES (?,?,?,?)')
  const blockIns = db.prepare('INSERT OR REPLACE INTO published_blocks (first, last, ids) VALUES (?,?,?)')
  const blockDel = db.prepare('DELETE FROM published_blocks WHERE first = ?')
  const resealRow = db.prepare('UPDATE messages SET headers = NULL, body = ?, key_id = ?, size = ? WHERE seq = ? AND key_id IS NULL')

  /**
   * The queue, exchange and routing key of the last insert record read (field 0, 1, 2), by where their
   * bytes are in the run being applied (forgotten at the start of each run): a run's records mostly share them, so each is decoded once per
   * run instead of once per message.
   */
  const prevAt = [0, 0, 0]
  const prevLen = [-1, -1, -1]
  const prevStr = ['', '', '']
  function field(buf: Buffer, at: number, n: number, f: number): string {
    if (prevLen[f] === n) {
      const a = prevAt[f]
      let i = 0
      while (i < n && buf[a + i] === buf[at + i]) i++
      if (i === n) return prevStr[f]
    }
    const v = buf.toString('utf8', at, at + n)
    prevAt[f] = at
    prevLen[f] = n
    prevStr[f] = v
    return v
  }

  /**
   * An insert record of a small body (see packMessages) joins the pending group: only the columns of
   * its row are read (readInsertRecord decodes the headers and makes a message object, which a row in
   * a group needs neither of). Returns where the next record starts, or -1 for a body of
   * GROUP_BODY_MAX or more (sealed in its own row: see applyPacked).
   */
  function groupInsert(buf: Buffer, p: number): number {
    const seq = buf.readDoubleLE(p + 1)
    let q = p + 9
    let n = buf.readUInt32LE(q)
    const queueName = field(buf, q + 4, n, 0)
    q += 4 + n
    n = buf.readUInt32LE(q)
    const messageId = buf.toString('utf8', q + 4, q + 4 + n)
    q += 4 + n
    n = buf.readUInt32LE(q)
    const exchange = field(buf, q + 4, n, 1)
    q += 4 + n
    n = buf.readUInt32LE(q)
    const routingKey = field(buf, q + 4, n, 2)
    q += 4 + n
    // the headers stay in the packed record, which is what the group seals
    q += 4 + buf.readUInt32LE(q)
    const ts = buf.readDoubleLE(q)
    const count = buf.readUInt32LE(q + 8)
    const expires = buf.readDoubleLE(q + 12)
    const len = buf.readUInt32LE(q + 20)
    q += 24
    if (len >= GROUP_BODY_MAX) return -1
    if (q + len > buf.length) throw new Error('truncated insert record')
    const next = q + len
    addRecord(buf, p, next)
    pushRow(seq, queueName, messageId, exchange, routingKey, ts, count, expires, len)
    if (pendingBytes >= GROUP_BYTES_MAX) flushGroup()
    return next
  }

  /**
   * Seqs of the transaction being applied whose insert and delete are both in it (undefined: none):
   * neither is applied, so the message never reaches broker.db, not even sealed in a group, and
   * costs the commit no row, no seal and no delete. The broker pairs them up within one posted
   * group; this catches a message acked while its group waited here behind the commit under way
   * (a third of the inserts at 5,000 msg/s paced, with the consumer keeping up).
   */
  let cancelled: Set<number> | undefined

  function cancelledIn(batches: Batch[]): Set<number> | undefined {
    if (batches.length < 2) return undefined
    // a delete can only cancel an insert made before it in this transaction, so with a seq no
    // smaller than the smallest insert seen so far (most acks are of rows committed earlier):
    // the set of inserted seqs is only built when some delete can be one
    let minIns = Infinity
    let candidates: number[] | undefined
    forEachRecord(batches, (kind, seq) => {
      if (kind === REC_INSERT || kind === REC_INSERT_SHARED) {
        if (seq < minIns) minIns = seq
      } else if ((kind === REC_DELETE || kind === REC_DELETE_BIG) && seq >= minIns) (candidates ??= []).push(seq)
    })
    if (!candidates) return undefined
    const inserted = new Set<number>()
    forEachRecord(batches, (kind, seq) => {
      if (kind === REC_INSERT || kind === REC_INSERT_SHARED) inserted.add(seq)
    })
    let out: Set<number> | undefined
    for (const seq of candidates) if (inserted.has(seq)) (out ??= new Set()).add(seq)
    return out
  }

  function forEachRecord(batches: Batch[], fn: (kind: number, seq: number) => void): void {
    for (const b of batches)
      for (const op of b.ops) {
        if (!(op instanceof Uint8Array)) continue
        const buf = Buffer.from(op.buffer, op.byteOffset, op.byteLength)
        for (let p = 0; p < buf.length; p = recordEnd(buf, p)) fn(buf[p], buf.readDoubleLE(p + 1))
      }
  }

  function applyPacked(view: Uint8Array, shared: Uint8Array[]): void {
    const buf = Buffer.from(view.buffer, view.byteOffset, view.byteLength)
    prevLen.fill(-1)
    let p = 0
    while (p < buf.length) {
      const kind = buf[p]
      if (cancelled !== undefined && cancelled.has(buf.readDoubleLE(p + 1))) {
        p = recordEnd(buf, p)
        continue
      }
      if (kind === REC_INSERT) {
        const next = groupInsert(buf, p)
        if (next >= 0) {
          p = next
          continue
        }
      }
      if (kind === REC_INSERT || kind === REC_INSERT_SHARED) {
        const start = p
        const {m, headers, next} = readInsertRecord(buf, p, shared)
        p = next
        // a shared body is GROUP_BODY_MAX or more (readInsertRecord checks): sealed in its own row
        if (m.body.length >= GROUP_BODY_MAX) ins.run(m.seq, m.queue, m.messageId, m.exchange, m.routingKey, headers || null, m.body, m.timestamp, m.deliveryCount, m.expiresAt)
        else {
          // the packed record itself is the group's plaintext record
          addRecord(buf, start, next)
          pushRow(m.seq, m.queue, m.messageId, m.exchange, m.routingKey, m.timestamp, m.deliveryCount, m.expiresAt, m.body.length)
          if (pendingBytes >= GROUP_BYTES_MAX) flushGroup()
        }
        continue
      }
      const seq = buf.readDoubleLE(p + 1)
      // only a delete or count of a row still waiting in the group closes it: closing it on every
      // delete made a group (and a nonce, a cipher and a row) per message when publishes and acks interleave
      flushIfPending(seq)
      p += 9
      if (kind === REC_DELETE) {
        // order among a run's records does not matter for a delete: a seq is inserted once, and a
        // delete of a row still in the pending group closed that group just above
        deleteLater(seq)
      } else if (kind === REC_DELETE_BIG) {
        delBig(seq, buf.readUInt32LE(p))
        p += 4
      } else if (kind === REC_COUNT) {
        cnt.run(buf.readUInt32LE(p), seq)
        p += 4
      } else throw new Error(`corrupt batch: record kind ${kind}`)
    }
    deleteQueued()
    flushGroup()
  }

  const queueRowsAfter = db.prepare('SELECT seq FROM messages WHERE queue = ? AND seq > ?')
  type Batch = {id: number; ops: (WireOp | Uint8Array)[]; shared?: Uint8Array[]}
  /** batches applied in one transaction: one commit, one fsync for all of them */
  const apply = db.transaction((batches: Batch[]) => {
    deltas.clear()
    let packed = 0
    for (const b of batches) for (const op of b.ops) if (op instanceof Uint8Array) packed += op.byteLength
    segmentGroups = packed >= GROUP_SEGMENT_COMMIT_MIN
    // deletes queued by a transaction that threw were rolled back with it
    delCount = 0
    bigDeletes = []
    groupDeletes = []
    for (const b of batches) applyOps(b.ops, b.shared ?? [])
    deleteBig()
    deleteGroups()
    writeDeltas()
    writeLive()
    // last: the bodies these rows point at reach the disk before the commit does
    segments.beforeCommit()
  })
  function applyOps(ops: (WireOp | Uint8Array)[], shared: Uint8Array[]): void {
    for (const op of ops) {
      if (op instanceof Uint8Array) {
        applyPacked(op, shared)
        continue
      }
      switch (op[0]) {
        case 'i':
          ins.run(op[1], op[2], op[3], op[4], op[5], op[6], op[7], op[8], op[9], op[10])
          break
        case 'd':
          deleteOne(op[1])
          break
        case 'c':
          cnt.run(op[2], op[1])
          break
        case 'x':
          exch.run(op[1], op[2])
          break
        case 'q':
          queue.run(op[1], op[2], op[3], op[4])
          break
        case 'b':
          bind.run(op[1], op[2], op[3])
          break
        case 'D':
          for (const r of queueGroupRows.all(op[1]) as {group_id: number | null; seg: number | null}[]) {
            rowGone(r.group_id)
            if (r.seg !== null) segments.released(r.seg)
          }
          for (const s of dq) s.run(op[1])
          deltas.delete(op[1])
          statsDrop.run(op[1])
          break
        case 'X':
          for (const s of dx) s.run(op[1])
          break
        case 'B':
          unbind.run(op[1], op[2], op[3])
          break
        case 'P':
          // a purge: the queue's rows after the last one the engine held in memory (those it deletes itself)
          for (const r of queueRowsAfter.all(op[1], op[2]) as {seq: number}[]) deleteOne(r.seq)
          break
        case 'k':
          key.run(op[1], op[2], op[3], Date.now())
          break
        case 'u':
          if (op[1]) blockIns.run(op[1][0], op[1][1], op[1][2])
          for (const first of op[2]) blockDel.run(first)
          break
        case 'R': {
          const h = op[6] ? Buffer.from(op[6], 'utf8') : empty
          resealRow.run(sealRecord(storeKey, rowAad(storeKeyId, op[3], op[2], op[4], op[5]), h, op[7]), storeKeyId, op[7].length, op[1])
          break
        }
      }
    }
  }

  /** segments emptied by the commits since the last message to the broker (it closes their fds) */
  let gone: number[] = []
  /** Commits batches in one transaction: undefined, or the error message if it rolled back (none of them written). */
  function commit(batches: Batch[]): string | undefined {
    cancelled = cancelledIn(batches)
    // resealing legacy plaintext rows: zero the plaintext's old cells instead of leaving it in free
    // space (off otherwise: sealed rows need no scrubbing, and it costs every delete)
    const scrub = batches.some((b) => b.ops.some((op) => !(op instanceof Uint8Array) && op[0] === 'R'))
    try {
      if (scrub) db.pragma('secure_delete = ON')
      apply(batches)
      gone.push(...segments.afterCommit())
      return undefined
    } catch (error) {
      // the transaction rolled back: the group bookkeeping must follow the database again
      loadGroups()
      segments.rolledBack()
      nextGroup = ((maxGroup.get() as {m: number | null}).m ?? 0) + 1
      return (error as Error).message
    } finally {
      cancelled = undefined
      if (scrub) db.pragma('secure_delete = OFF')
    }
  }

  function closeStore(): void {
    sealer.dispose()
    segments.close()
    db.close()
    parentPort!.postMessage({closed: true})
  }

  parentPort!.on('message', (msg: Batch | {close: true}) => {
    if ('close' in msg) {
      closeStore()
      return
    }
    // Group commit on this side too: the batches the broker posted while the last commit's fsync ran
    // are already queued here, and they go in this one transaction (one fsync) instead of one commit
    // each, one after the other. At a low rate each batch holds a publish or two, and a queue of such
    // commits was the tail of confirm latency (4 fsyncs in a row behind a slow one). A close stays
    // queued behind them (it is taken after this commit).
    const batches: Batch[] = [msg]
    let closing = false
    for (;;) {
      const next = receiveMessageOnPort(parentPort!)
      if (!next) break
      const m = next.message as Batch | {close: true}
      if ('close' in m) {
        closing = true
        break
      }
      batches.push(m)
    }
    const error = commit(batches)
    const emptied = () => {
      if (gone.length === 0) return undefined
      const g = gone
      gone = []
      return g
    }
    if (error === undefined) parentPort!.postMessage({gone: emptied(), ids: batches.map((b) => b.id)})
    else if (batches.length === 1) parentPort!.postMessage({error, ids: [msg.id]})
    else {
      // one batch's failure must not fail the others: each on its own, as if never merged
      for (const b of batches) {
        const e = commit([b])
        parentPort!.postMessage(e === undefined ? {gone: emptied(), ids: [b.id]} : {error: e, ids: [b.id]})
      }
    }
    if (closing) closeStore()
  })
}
