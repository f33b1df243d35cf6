import {type Migration, type SqlParam, type SqlStore, migrate, openStore} from '../store/sql.js'
import {Journal, type JournalRecord, type JournalTorn, fitsRecord} from './journal.js'

/**
 * The relay's directory of users and its queue of undelivered messages, over the shared SQL
 * store layer (SQLite file data/relay.db by default, MySQL when store.url says so). Message
 * contents are ciphertext chosen by the clients; big ones live in files (`file`) and only
 * their name is stored here.
 */
export interface RelayUser {
  id: Buffer
  name: string
  publicKey: Buffer
}

export interface StoredMessage {
  id: number
  to: Buffer
  from: Buffer
  type: number
  size: number
  body: Buffer | null
  file: string | null
}

const MIGRATIONS: Migration[] = [
  {
    id: 1,
    mysql: [
      `CREATE TABLE IF NOT EXISTS relay_clients (
        id BINARY(16) NOT NULL PRIMARY KEY,
        name VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        public_key VARBINARY(2048) NOT NULL,
        last_seen VARCHAR(40) NOT NULL,
        created_at VARCHAR(40) NOT NULL,
        UNIQUE KEY relay_clients_name (name)
      ) ENGINE=InnoDB`,
      `CREATE TABLE IF NOT EXISTS relay_messages (
        id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        to_client BINARY(16) NOT NULL,
        from_client BINARY(16) NOT NULL,
        type TINYINT UNSIGNED NOT NULL,
        size BIGINT UNSIGNED NOT NULL,
        body MEDIUMBLOB NULL,
        file VARCHAR(255) NULL,
        created_at VARCHAR(40) NOT NULL,
        KEY relay_messages_to (to_client, id)
      ) ENGINE=InnoDB`,
    ],
    name: 'relay clients and messages',
    sqlite: [
      `CREATE TABLE IF NOT EXISTS relay_clients (
        id BLOB NOT NULL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        public_key BLOB NOT NULL,
        last_seen TEXT NOT NULL,
        created_at TEXT NOT NULL
      )`,
      `CREATE TABLE IF NOT EXISTS relay_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        to_client BLOB NOT NULL,
        from_client BLOB NOT NULL,
        type INTEGER NOT NULL,
        size INTEGER NOT NULL,
        body BLOB,
        file TEXT,
        created_at TEXT NOT NULL
      )`,
      'CREATE INDEX IF NOT EXISTS relay_messages_to ON relay_messages (to_client, id)',
    ],
  },
  {
    // AUTOINCREMENT rewrote sqlite_sequence in every insert: a third WAL frame per text, 7-8 us of
    // the relay's ~80 us CPU per text. Ids stay never reused: a new id is one more than both the
    // highest stored id and relay_id_floor.last_id, which a trigger raises, in the deleting
    // statement, whenever the highest stored message is deleted. Rebuilt in one transaction; the
    // statements can run again if the process dies before the migration is recorded.
    id: 2,
    mysql: [],
    name: 'relay message ids without AUTOINCREMENT (SQLite)',
    sqlite: [
      'BEGIN IMMEDIATE',
      `CREATE TABLE IF NOT EXISTS relay_messages_v2 (
        id INTEGER PRIMARY KEY,
        to_client BLOB NOT NULL,
        from_client BLOB NOT NULL,
        type INTEGER NOT NULL,
        size INTEGER NOT NULL,
        body BLOB,
        file TEXT,
        created_at TEXT NOT NULL
      )`,
      'INSERT INTO relay_messages_v2 (id, to_client, from_client, type, size, body, file, created_at) SELECT id, to_client, from_client, type, size, body, file, created_at FROM relay_messages',
      'CREATE TABLE IF NOT EXISTS relay_id_floor (only INTEGER PRIMARY KEY CHECK (only = 1), last_id INTEGER NOT NULL)',
      'INSERT OR IGNORE INTO relay_id_floor (only, last_id) VALUES (1, 0)',
      // the old table's high-water mark (ids of messages already delivered and deleted)
      "UPDATE relay_id_floor SET last_id = MAX(last_id, IFNULL((SELECT seq FROM sqlite_sequence WHERE name = 'relay_messages'), 0))",
      'DROP TABLE relay_messages',
      'ALTER TABLE relay_messages_v2 RENAME TO relay_messages',
      'CREATE INDEX IF NOT EXISTS relay_messages_to ON relay_messages (to_client, id)',
      `CREATE TRIGGER IF NOT EXISTS relay_messages_last_id AFTER DELETE ON relay_messages
        WHEN OLD.id > IFNULL((SELECT MAX(id) FROM relay_messages), 0)
        BEGIN UPDATE relay_id_floor SET last_id = MAX(last_id, OLD.id); END`,
      'COMMIT',
    ],
  },
  {
    // The journal (journal.ts): the highest id it moved into relay_messages, written in the same
    // transaction as the rows. Replay skips every record at or below it, so a record is inserted
    // once whatever happened to it since (pulled and deleted included).
    id: 3,
    mysql: [],
    name: 'relay journal watermark (SQLite)',
    sqlite: [
      'CREATE TABLE IF NOT EXISTS relay_journal_applied (only INTEGER PRIMARY KEY CHECK (only = 1), last_id INTEGER NOT NULL)',
      'INSERT OR IGNORE INTO relay_journal_applied (only, last_id) VALUES (1, 0)',
    ],
  },
]

interface UserRow {
  id: Buffer
  name: string
  public_key: Buffer
}

interface MessageRow {
  id: number | string
  to_client: Buffer
  from_client: Buffer
  type: number
  size: number | string
  body: Buffer | null
  file: string | null
}

const toUser = (r: UserRow): RelayUser => ({id: Buffer.from(r.id), name: r.name, publicKey: Buffer.from(r.public_key)})
const toMessage = (r: MessageRow): StoredMessage => ({
  body: r.body ? Buffer.from(r.body) : null,
  file: r.file,
  from: Buffer.from(r.from_client),
  id: Number(r.id),
  size: Number(r.size),
  to: Buffer.from(r.to_client),
  type: Number(r.type),
})

const INSERT_MESSAGE = 'INSERT INTO relay_messages (to_client, from_client, type, size, body, file, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)'
/** SQLite: the next id after both the highest stored one and the highest ever deleted (migration 2) */
const INSERT_MESSAGE_SQLITE =
  'INSERT INTO relay_messages (id, to_client, from_client, type, size, body, file, created_at) VALUES (' +
  'MAX(IFNULL((SELECT MAX(id) FROM relay_messages), 0), IFNULL((SELECT last_id FROM relay_id_floor), 0)) + 1, ?, ?, ?, ?, ?, ?, ?)'

/** the journal's rows, ids chosen by the relay */
const INSERT_JOURNALED = 'INSERT INTO relay_messages (id, to_client, from_client, type, size, body, file, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'
/** replay at start: only records above the watermark, which are not in the table; OR IGNORE so that nothing could insert one twice */
const REPLAY_JOURNALED = 'INSERT OR IGNORE INTO relay_messages (id, to_client, from_client, type, size, body, file, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'
const SET_APPLIED = 'UPDATE relay_journal_applied SET last_id = MAX(last_id, ?) WHERE only = 1'
/** the next free id: after every stored id, every deleted one (relay_id_floor) and every block reserved before */
const NEXT_ID = 'SELECT MAX(IFNULL((SELECT MAX(id) FROM relay_messages), 0), IFNULL((SELECT last_id FROM relay_id_floor), 0), IFNULL((SELECT last_id FROM relay_journal_applied), 0)) + 1 AS n'
const RESERVE_IDS = 'UPDATE relay_id_floor SET last_id = MAX(last_id, ?) WHERE only = 1'
/**
 * Ids are handed out in memory from blocks reserved in relay_id_floor (committed before the first of
 * them is acknowledged), so every message, journaled or not, takes its id in arrival order and no id
 * comes back after a restart (the unused rest of a block is skipped).
 */
const ID_BLOCK = 1024
/** how often the journal is fdatasynced and moved into relay_messages (the checkpointer's cadence) */
export const JOURNAL_FLUSH_MS = 250
/** journal bytes not yet in the database that start a flush regardless of the timer (bounds a flush's read) */
const FLUSH_BYTES = 8 * 1024 * 1024
/** journal bytes moved per transaction by the timed flush (about 600 texts of 100 bytes) */
const FLUSH_SLICE = 128 * 1024
/** the journal file is rotated once this big, and at most once a second (see Journal.rotate) */
const ROTATE_BYTES = 1024 * 1024
const ROTATE_MIN_MS = 1000

export interface RelayStoreOptions {
  url: string
  dataDir: string
  /**
   * SQLite: acknowledged messages go to the journal first (default). false: every message is its own
   * INSERT, no journal and no lock (tools that read or write a store while its relay runs).
   * flushMs: the journal's flush cadence (tests hold messages in the journal with a long one).
   */
  journal?: false | {flushMs?: number}
}

/** what open() found in the journal */
export interface JournalRecovery {
  /** records moved into relay_messages at start (acknowledged, not yet flushed when the last relay stopped) */
  replayed: number
  /** bytes ignored at the end of a journal file: a record cut short by a crash, or damage (keptAt set) */
  torn: JournalTorn[]
}

/** last_seen is kept to the second: a user's requests within one second write it once */
const TOUCH_EVERY_MS = 1000
/** users remembered in memory (never deleted and never changed once registered, so never stale) */
const USER_CACHE = 10_000

export class RelayStore {
  /**
   * Registered users by hex id. A text's send cost two statements besides its INSERT (an UPDATE of
   * the sender's last_seen, a SELECT of the recipient), the UPDATE a write transaction of its own;
   * users are immutable, so only the INSERT and one last_seen write per user and second are left.
   */
  private readonly users = new Map<string, RelayUser>()
  /** when each user's last_seen was last written (ms) */
  private readonly touched = new Map<string, number>()
  /** messages waiting for this turn's commit (see addMessage) */
  private batch: {row: SqlParam[]; resolve: (id: number) => void; reject: (error: unknown) => void}[] = []
  /** created_at of the last commit, reused within its millisecond */
  private nowMs = 0
  private nowIso = ''

  private readonly insertMessage: string

  /** SQLite: the journal of acknowledged messages (see journal.ts) */
  private journal?: Journal
  /** created_at of the last flushed record, reused within its millisecond */
  private flushMs = 0
  private flushIso = ''
  /** ids: the next one, and the last of the reserved block */
  private nextId = 0
  private reservedTo = 0
  private timer?: NodeJS.Timeout
  private ticking = false
  private rotatedAt = Date.now()
  recovery: JournalRecovery = {replayed: 0, torn: []}

  private constructor(readonly sql: SqlStore) {
    this.insertMessage = sql.dialect === 'sqlite' ? INSERT_MESSAGE_SQLITE : INSERT_MESSAGE
  }

  private remember(u: RelayUser): RelayUser {
    if (this.users.size >= USER_CACHE) this.users.clear()
    this.users.set(u.id.toString('hex'), u)
    return u
  }

  static async open(opts: RelayStoreOptions): Promise<RelayStore> {
    const sql = await openStore({dataDir: opts.dataDir, file: 'relay.db', url: opts.url})
    try {
      await migrate(sql, 'relay_migrations', MIGRATIONS)
      const store = new RelayStore(sql)
      if (opts.journal !== false && sql.file !== undefined && sql.file !== ':memory:' && sql.runNow && sql.getNow && sql.transactionNow) {
        store.startJournal(Journal.open(`${sql.file.replace(/\.db$/, '')}.jnl`), opts.journal?.flushMs ?? JOURNAL_FLUSH_MS)
      }
      return store
    } catch (error) {
      await sql.close()
      throw error
    }
  }

  /**
   * Replays what the journal holds beyond the watermark (acknowledged before a crash), then hands
   * out ids after everything stored, deleted, reserved or journaled.
   */
  private startJournal(journal: Journal, flushMs: number): void {
    const sql = this.sql
    try {
      const applied = Number(sql.getNow!<{last_id: number}>('SELECT last_id FROM relay_journal_applied WHERE only = 1')?.last_id ?? 0)
      const {records, torn} = journal.read()
      const fresh = records.filter((r) => r.id > applied)
      let maxId = 0
      for (const r of records) maxId = Math.max(maxId, r.id)
      if (fresh.length > 0) {
        sql.transactionNow!(() => {
          for (const r of fresh) sql.runNow!(REPLAY_JOURNALED, this.journalRow(r))
          sql.runNow!(SET_APPLIED, [fresh[fresh.length - 1].id])
        })
      }
      this.recovery = {replayed: fresh.length, torn}
      this.nextId = Math.max(Number(this.sql.getNow!<{n: number}>(NEXT_ID)!.n), maxId + 1)
      this.reservedTo = this.nextId - 1
      this.journal = journal
      this.timer = setInterval(() => void this.tick(), flushMs)
      this.timer.unref()
    } catch (error) {
      void journal.close()
      throw error
    }
  }

  /** The next id, reserving a new block in relay_id_floor (committed) when this one is spent. */
  private takeId(): number {
    if (this.nextId > this.reservedTo) {
      const sql = this.sql
      sql.transactionNow!(() => {
        // a store opened without the journal may have inserted meanwhile: never below its ids
        this.nextId = Math.max(this.nextId, Number(this.sql.getNow!<{n: number}>(NEXT_ID)!.n))
        sql.runNow!(RESERVE_IDS, [this.nextId + ID_BLOCK - 1])
      })
      this.reservedTo = this.nextId + ID_BLOCK - 1
    }
    return this.nextId++
  }

  /**
   * Moves every journaled message into relay_messages in one transaction, with the watermark. Runs
   * before anything reads, counts or deletes messages, so nobody sees a difference.
   */
  flush(maxBytes?: number): void {
    const journal = this.journal
    if (journal === undefined || journal.pending === 0) return
    const {records, end} = journal.unflushed(maxBytes)
    if (records.length > 0) {
      const sql = this.sql
      sql.transactionNow!(() => {
        for (const r of records) sql.runNow!(INSERT_JOURNALED, this.journalRow(r))
        sql.runNow!(SET_APPLIED, [records[records.length - 1].id])
      })
    }
    journal.markFlushed(end)
  }

  /** a journal record as the parameters of INSERT_JOURNALED / REPLAY_JOURNALED */
  private journalRow(r: JournalRecord): SqlParam[] {
    return [r.id, r.to, r.from, r.type, r.size, r.body, r.file, this.createdAt(r.createdMs)]
  }

  private createdAt(ms: number): string {
    if (ms !== this.flushMs) {
      this.flushMs = ms
      this.flushIso = new Date(ms).toISOString()
    }
    return this.flushIso
  }

  /**
   * The journal's cadence: fdatasync (thread pool), then into the database, then maybe a new file.
   * Whatever fails is tried again next time; readers flush (and report failures) themselves.
   */
  private async tick(): Promise<void> {
    const journal = this.journal
    if (this.ticking || journal === undefined) return
    this.ticking = true
    try {
      await journal.sync()
      // in slices, each its own transaction, other work in between: one transaction for 250 ms of
      // texts held the event loop for ~10 ms (a pull, or close, takes whatever is left at once)
      while (this.journal === journal && journal.pending > 0) {
        this.flush(FLUSH_SLICE)
        if (journal.pending > 0) await new Promise((resolve) => setImmediate(resolve))
      }
      if (this.journal !== journal) return
      if (journal.bytes >= ROTATE_BYTES && Date.now() - this.rotatedAt >= ROTATE_MIN_MS && journal.rotate()) this.rotatedAt = Date.now()
    } catch {
      // the records stay in the journal: nothing is lost
    } finally {
      this.ticking = false
    }
  }

  get label(): string {
    return this.sql.label
  }

  /** Adds a user; false when the name is taken. */
  async addUser(id: Buffer, name: string, publicKey: Buffer): Promise<boolean> {
    const now = new Date().toISOString()
    try {
      await this.sql.run('INSERT INTO relay_clients (id, name, public_key, last_seen, created_at) VALUES (?, ?, ?, ?, ?)', [id, name, publicKey, now, now])
      return true
    } catch (error) {
      const msg = (error as Error).message
      if (/UNIQUE|Duplicate entry|ER_DUP_ENTRY/i.test(msg) || (error as {code?: string}).code === 'ER_DUP_ENTRY') return false
      throw error
    }
  }

  /** A user already in memory, without a query (undefined: ask userById). */
  cachedUser(id: Buffer): RelayUser | undefined {
    return this.users.get(id.toString('hex'))
  }

  /** cachedUser() by the id's hex key. */
  cachedUserKey(key: string): RelayUser | undefined {
    return this.users.get(key)
  }

  async userById(id: Buffer): Promise<RelayUser | undefined> {
    const known = this.users.get(id.toString('hex'))
    if (known) return known
    const r = await this.sql.get<UserRow>('SELECT id, name, public_key FROM relay_clients WHERE id = ?', [id])
    return r ? this.remember(toUser(r)) : undefined
  }

  async userByName(name: string): Promise<RelayUser | undefined> {
    const r = await this.sql.get<UserRow>('SELECT id, name, public_key FROM relay_clients WHERE name = ?', [name])
    return r ? toUser(r) : undefined
  }

  /** Everyone but `except`, in registration order. */
  async listUsers(except?: Buffer): Promise<RelayUser[]> {
    const rows = await this.sql.all<UserRow>('SELECT id, name, public_key FROM relay_clients ORDER BY created_at, name')
    return rows.map(toUser).filter((u) => !except || !u.id.equals(except))
  }

  /**
   * True when touch() has nothing to do: the user is known and its last_seen was written within
   * the second. Lets the server skip a promise per request; false means call touch().
   */
  touchedRecently(id: Buffer): boolean {
    return this.touchedRecentlyKey(id.toString('hex'))
  }

  /** touchedRecently() by the id's hex key (a caller that keeps it saves the conversion). */
  touchedRecentlyKey(key: string): boolean {
    const last = this.touched.get(key)
    return last !== undefined && Date.now() - last < TOUCH_EVERY_MS && this.users.has(key)
  }

  /**
   * Updates a user's last-seen time (to the second: at most one write per user and second);
   * true when the user exists.
   */
  async touch(id: Buffer): Promise<boolean> {
    const key = id.toString('hex')
    const now = Date.now()
    const last = this.touched.get(key)
    if (last !== undefined && now - last < TOUCH_EVERY_MS && this.users.has(key)) return true
    const r = await this.sql.run('UPDATE relay_clients SET last_seen = ? WHERE id = ?', [new Date(now).toISOString(), id])
    // MySQL may count only changed rows: an unchanged timestamp falls back to a lookup.
    const exists = r.changes > 0 || (await this.userById(id)) !== undefined
    if (exists) {
      if (this.touched.size >= USER_CACHE) this.touched.clear()
      this.touched.set(key, now)
      if (!this.users.has(key)) await this.userById(id)
    }
    return exists
  }

  /**
   * Stores a message; resolves with its id once it is committed. Messages that arrive in the same
   * event-loop turn (from different connections) share one transaction: one commit, so one set of
   * WAL writes and locks, for all of them, where each paid its own (about 45 us of a text's cost
   * on SQLite). Every caller still answers only after its own row is committed.
   */
  addMessage(m: Omit<StoredMessage, 'id'>): Promise<number> {
    return this.add(m.to, m.from, m.type, m.size, m.body, m.file)
  }

  /** addMessage() without the message object: the send path's per-text allocations are its cost. */
  add(to: Buffer, from: Buffer, type: number, size: number, body: Buffer | null, file: string | null): Promise<number> {
    return new Promise((resolve, reject) => {
      // created_at is filled in at commit
      this.batch.push({reject, resolve, row: [to, from, type, size, body, file, '']})
      if (this.batch.length === 1) setImmediate(this.commitSoon)
    })
  }

  private readonly commitSoon = (): void => void this.commitBatch()

  private async commitBatch(): Promise<void> {
    const batch = this.batch
    this.batch = []
    if (batch.length === 0) return
    const t = Date.now()
    if (this.journal) {
      this.journalBatch(batch, t)
      return
    }
    if (t !== this.nowMs) {
      this.nowMs = t
      this.nowIso = new Date(t).toISOString()
    }
    for (const b of batch) b.row[6] = this.nowIso
    try {
      if (batch.length === 1) {
        // alone in its turn: a plain autocommit insert, no BEGIN/COMMIT statements (on SQLite at once, no promise)
        const {sql} = this
        batch[0].resolve((sql.runNow ? sql.runNow(this.insertMessage, batch[0].row) : await sql.run(this.insertMessage, batch[0].row)).lastInsertId)
        return
      }
      const rs = await this.sql.runBatch(this.insertMessage, batch.map((b) => b.row))
      for (const [i, b] of batch.entries()) b.resolve(rs[i].lastInsertId)
    } catch (error) {
      // nothing of the batch was committed: every sender gets its failure
      for (const b of batch) b.reject(error)
    }
  }

  /**
   * The batch's records in one journal write, then each sender resolved with its id: the record is
   * in the page cache before the acknowledgement (it survives the relay being killed), as the WAL
   * commit was. A failed write acknowledges nothing. A message too big for a record (not one the
   * relay's protocol stores inline, whose bodies are at most 64 KiB) is inserted with its id, committed, instead.
   */
  private journalBatch(batch: {row: SqlParam[]; resolve: (id: number) => void; reject: (error: unknown) => void}[], t: number): void {
    const records: JournalRecord[] = []
    const journal = this.journal!
    const sql = this.sql
    /** direct[i]: records[i] goes into relay_messages at once (committed), not into the journal */
    let direct: boolean[] | undefined
    let committed = false
    try {
      for (let i = 0; i < batch.length; i++) {
        const [to, from, type, size, body, file] = batch[i].row as [Buffer, Buffer, number, number, Buffer | null, string | null]
        records.push({body, createdMs: t, file, from, id: this.takeId(), size, to, type})
        if (!fitsRecord(body, file)) (direct ??= [])[i] = true
      }
      if (direct !== undefined) {
        sql.transactionNow!(() => {
          for (const [i, r] of records.entries()) if (direct![i]) sql.runNow!(INSERT_JOURNALED, this.journalRow(r))
        })
        committed = true
        journal.append(records.filter((_, i) => !direct![i]))
      } else {
        journal.append(records)
      }
    } catch (error) {
      for (const [i, b] of batch.entries()) {
        if (committed && direct?.[i]) b.resolve(records[i].id)
        else b.reject(error)
      }
      return
    }
    for (const [i, b] of batch.entries()) b.resolve(records[i].id)
    if (journal.pending >= FLUSH_BYTES) {
      try {
        this.flush()
      } catch {
        // still in the journal: the next flush takes it
      }
    }
  }

  /** Waiting messages for `to`, oldest first, without their bodies (see body()) so a pull's memory stays small. */
  async pending(to: Buffer, limit = 1000): Promise<StoredMessage[]> {
    this.flush()
    const rows = await this.sql.all<MessageRow>(`SELECT id, to_client, from_client, type, size, NULL AS body, file FROM relay_messages WHERE to_client = ? ORDER BY id LIMIT ${Math.floor(limit)}`, [to])
    return rows.map(toMessage)
  }

  /** The inline content of one message (null when it lives in a file). */
  async body(id: number): Promise<Buffer | null> {
    const r = await this.sql.get<{body: Buffer | null}>('SELECT body FROM relay_messages WHERE id = ?', [id])
    return r?.body ? Buffer.from(r.body) : null
  }

  async deleteMessages(ids: number[]): Promise<void> {
    this.flush()
    for (let i = 0; i < ids.length; i += 500) {
      const part = ids.slice(i, i + 500)
      await this.sql.run(`DELETE FROM relay_messages WHERE id IN (${part.map(() => '?').join(',')})`, part)
    }
  }

  async messageFiles(): Promise<Set<string>> {
    this.flush()
    const rows = await this.sql.all<{file: string}>('SELECT file FROM relay_messages WHERE file IS NOT NULL')
    return new Set(rows.map((r) => r.file))
  }

  async counts(): Promise<{users: number; messages: number}> {
    this.flush()
    const u = await this.sql.get<{n: number | string}>('SELECT COUNT(*) AS n FROM relay_clients')
    const m = await this.sql.get<{n: number | string}>('SELECT COUNT(*) AS n FROM relay_messages')
    return {messages: Number(m?.n ?? 0), users: Number(u?.n ?? 0)}
  }

  async close(): Promise<void> {
    await this.commitBatch()
    if (this.timer) clearInterval(this.timer)
    const journal = this.journal
    try {
      if (journal) {
        await journal.sync()
        // what fails to move stays in the journal: the next start replays it
        this.flush()
      }
    } finally {
      this.journal = undefined
      await journal?.close()
      await this.sql.close()
    }
  }
}
