import {type Migration, type SqlParam, type SqlStore, migrate, openStore} from '../store/sql.js'

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

  private constructor(readonly sql: SqlStore) {
    this.insertMessage = sql.dialect === 'sqlite' ? INSERT_MESSAGE_SQLITE : INSERT_MESSAGE
  }

  private remember(u: RelayUser): RelayUser {
    if (this.users.size >= USER_CACHE) this.users.clear()
    this.users.set(u.id.toString('hex'), u)
    return u
  }

  static async open(opts: {url: string; dataDir: string}): Promise<RelayStore> {
    const sql = await openStore({dataDir: opts.dataDir, file: 'relay.db', url: opts.url})
    await migrate(sql, 'relay_migrations', MIGRATIONS)
    return new RelayStore(sql)
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

  /** Waiting messages for `to`, oldest first, without their bodies (see body()) so a pull's memory stays small. */
  async pending(to: Buffer, limit = 1000): Promise<StoredMessage[]> {
    const rows = await this.sql.all<MessageRow>(`SELECT id, to_client, from_client, type, size, NULL AS body, file FROM relay_messages WHERE to_client = ? ORDER BY id LIMIT ${Math.floor(limit)}`, [to])
    return rows.map(toMessage)
  }

  /** The inline content of one message (null when it lives in a file). */
  async body(id: number): Promise<Buffer | null> {
    const r = await this.sql.get<{body: Buffer | null}>('SELECT body FROM relay_messages WHERE id = ?', [id])
    return r?.body ? Buffer.from(r.body) : null
  }

  async deleteMessages(ids: number[]): Promise<void> {
    for (let i = 0; i < ids.length; i += 500) {
      const part = ids.slice(i, i + 500)
      await this.sql.run(`DELETE FROM relay_messages WHERE id IN (${part.map(() => '?').join(',')})`, part)
    }
  }

  async messageFiles(): Promise<Set<string>> {
    const rows = await this.sql.all<{file: string}>('SELECT file FROM relay_messages WHERE file IS NOT NULL')
    return new Set(rows.map((r) => r.file))
  }

  async counts(): Promise<{users: number; messages: number}> {
    const u = await this.sql.get<{n: number | string}>('SELECT COUNT(*) AS n FROM relay_clients')
    const m = await this.sql.get<{n: number | string}>('SELECT COUNT(*) AS n FROM relay_messages')
    return {messages: Number(m?.n ?? 0), users: Number(u?.n ?? 0)}
  }

  async close(): Promise<void> {
    await this.commitBatch()
    await this.sql.close()
  }
}
