import Database from 'better-sqlite3'
import {join} from 'node:path'

import {ConfigError, UnavailableError} from '../errors.js'
import {Checkpointer, setFallbackAutocheckpoint} from './checkpointer.js'
import {ensurePrivateDir} from '../util/fs.js'

export type SqlParam = string | number | bigint | boolean | null | Buffer | Date
export type Dialect = 'sqlite' | 'mysql'

export interface RunResult {
  changes: number
  lastInsertId: number
}

/**
 * One small async interface over the embedded SQLite store and MySQL/MariaDB, so every part of
 * mq (records, relay, admin) is written once. Parameterised SQL only: `?` placeholders work in
 * both dialects. Dialect-specific DDL lives in each area's migrations.
 */
export interface SqlStore {
  readonly dialect: Dialect
  /** a human label without credentials, for logs and /health */
  readonly label: string
  run(sql: string, params?: SqlParam[]): Promise<RunResult>
  all<T = Record<string, unknown>>(sql: string, params?: SqlParam[]): Promise<T[]>
  get<T = Record<string, unknown>>(sql: string, params?: SqlParam[]): Promise<T | undefined>
  /** Runs fn in one transaction on one connection; rolls back if it throws. */
  transaction<T>(fn: (tx: SqlStore) => Promise<T>): Promise<T>
  /**
   * One statement once per parameter list, all in one transaction (one commit): resolves once it
   * is committed, with a result per list; nothing is kept if any fails. On SQLite nothing else
   * runs between its statements.
   */
  runBatch(sql: string, list: SqlParam[][]): Promise<RunResult[]>
  /**
   * SQLite only: run() at once, without a promise or the boolean/Date conversion (params must be
   * strings, numbers, bigints, Buffers or null), for a hot path whose statement is its own commit.
   */
  runNow?(sql: string, params: readonly SqlParam[]): RunResult
  /** SQLite only: get() at once, without a promise (params as for runNow()). */
  getNow?<T = Record<string, unknown>>(sql: string, params?: readonly SqlParam[]): T | undefined
  /** SQLite only: fn (runNow() calls) in one transaction, at once; throws when an async transaction is open. */
  transactionNow?<T>(fn: () => T): T
  /** SQLite only: the database file (':memory:' for none) */
  readonly file?: string
  ping(): Promise<void>
  close(): Promise<void>
}

export interface Migration {
  id: number
  name: string
  sqlite: string[]
  mysql: string[]
}

/** prepared statements kept per SQLite store */
const STATEMENT_CACHE = 200

const toSqlite = (p: SqlParam): unknown => (typeof p === 'boolean' ? (p ? 1 : 0) : p instanceof Date ? p.toISOString() : p)

class SqliteStore implements SqlStore {
  readonly dialect = 'sqlite' as const
  private chain: Promise<unknown> = Promise.resolve()
  private inTx = false

  /**
   * Prepared statements by SQL text: preparing anew on every call was a third of the broker's
   * records-store time under proxy load. Bounded, since multi-row statements vary in their text.
   */
  private readonly statements = new Map<string, Database.Statement>()

  constructor(
    readonly db: Database.Database,
    readonly file: string,
    private readonly checkpointer?: Checkpointer,
  ) {}

  get label(): string {
    return `sqlite:${this.file}`
  }

  private statement(sql: string): Database.Statement {
    let st = this.statements.get(sql)
    if (st === undefined) {
      st = this.db.prepare(sql)
      if (this.statements.size >= STATEMENT_CACHE) this.statements.delete(this.statements.keys().next().value!)
      this.statements.set(sql, st)
    }
    return st
  }

  async run(sql: string, params: SqlParam[] = []): Promise<RunResult> {
    const r = this.statement(sql).run(...params.map(toSqlite))
    return {changes: r.changes, lastInsertId: Number(r.lastInsertRowid)}
  }

  runNow(sql: string, params: readonly SqlParam[]): RunResult {
    const r = this.statement(sql).run(params)
    return {changes: r.changes, lastInsertId: Number(r.lastInsertRowid)}
  }

  getNow<T>(sql: string, params: readonly SqlParam[] = []): T | undefined {
    return this.statement(sql).get(params) as T | undefined
  }

  transactionNow<T>(fn: () => T): T {
    if (this.inTx) throw new Error('an async transaction is open on this store')
    return this.db.transaction(fn)()
  }

  async all<T>(sql: string, params: SqlParam[] = []): Promise<T[]> {
    return this.statement(sql).all(...params.map(toSqlite)) as T[]
  }

  async get<T>(sql: string, params: SqlParam[] = []): Promise<T | undefined> {
    return this.statement(sql).get(...params.map(toSqlite)) as T | undefined
  }

  async runBatch(sql: string, list: SqlParam[][]): Promise<RunResult[]> {
    const st = this.statement(sql)
    const all = this.db.transaction(() =>
      list.map((params) => {
        const r = st.run(...params.map(toSqlite))
        return {changes: r.changes, lastInsertId: Number(r.lastInsertRowid)}
      }),
    )
    // inside another caller's open transaction it would only be a savepoint, committed with theirs: wait for it
    while (this.inTx) await this.chain
    return all()
  }

  // better-sqlite3 is synchronous and has one connection: serialise async transactions so two
  // callers never interleave statements inside each other's BEGIN ... COMMIT.
  transaction<T>(fn: (tx: SqlStore) => Promise<T>): Promise<T> {
    if (this.inTx) return fn(this)
    const next = this.chain.then(async () => {
      this.inTx = true
      this.db.exec('BEGIN IMMEDIATE')
      try {
        const out = await fn(this)
        this.db.exec('COMMIT')
        return out
      } catch (error) {
        if (this.db.inTransaction) this.db.exec('ROLLBACK')
        throw error
      } finally {
        this.inTx = false
      }
    })
    this.chain = next.catch(() => {})
    return next
  }

  async ping(): Promise<void> {
    this.db.prepare('SELECT 1').get()
  }

  async close(): Promise<void> {
    await this.chain
    await this.checkpointer?.close()
    this.db.close()
  }
}

type MysqlPool = import('mysql2/promise').Pool
type MysqlConn = import('mysql2/promise').PoolConnection

class MysqlStore implements SqlStore {
  readonly dialect = 'mysql' as const

  constructor(
    private readonly pool: MysqlPool,
    readonly label: string,
    private readonly conn?: MysqlConn,
  ) {}

  private get q(): MysqlPool | MysqlConn {
    return this.conn ?? this.pool
  }

  async run(sql: string, params: SqlParam[] = []): Promise<RunResult> {
    const [r] = await this.q.execute(sql, params as never[])
    const h = r as {affectedRows: number; insertId: number}
    return {changes: h.affectedRows, lastInsertId: h.insertId}
  }

  async all<T>(sql: string, params: SqlParam[] = []): Promise<T[]> {
    const [rows] = await this.q.execute(sql, params as never[])
    return rows as T[]
  }

  async get<T>(sql: string, params: SqlParam[] = []): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0]
  }

  async transaction<T>(fn: (tx: SqlStore) => Promise<T>): Promise<T> {
    if (this.conn) return fn(this)
    const conn = await this.pool.getConnection()
    try {
      await conn.beginTransaction()
      const out = await fn(new MysqlStore(this.pool, this.label, conn))
      await conn.commit()
      return out
    } catch (error) {
      await conn.rollback().catch(() => {})
      throw error
    } finally {
      conn.release()
    }
  }

  runBatch(sql: string, list: SqlParam[][]): Promise<RunResult[]> {
    return this.transaction(async (tx) => {
      const out: RunResult[] = []
      for (const params of list) out.push(await tx.run(sql, params))
      return out
    })
  }

  async ping(): Promise<void> {
    await this.pool.query('SELECT 1')
  }

  async close(): Promise<void> {
    await this.pool.end()
  }
}

export interface OpenStoreOptions {
  /** "sqlite" (default), "sqlite:/path/file.db", or mysql://user:pass@host:port/db */
  url: string
  /** $MQ_HOME/data, where embedded databases live */
  dataDir: string
  /** file name of the embedded database under dataDir */
  file: string
}

/** Opens the configured store. MySQL errors become UnavailableError (exit 69). */
export async function openStore(opts: OpenStoreOptions): Promise<SqlStore> {
  const url = opts.url.trim()
  if (url === 'sqlite' || url.startsWith('sqlite:')) {
    const file = url.startsWith('sqlite:') && url.length > 7 ? url.slice(7) : join(opts.dataDir, opts.file)
    if (!url.startsWith('sqlite:')) ensurePrivateDir(opts.dataDir)
    const db = new Database(file)
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = NORMAL')
    db.pragma('busy_timeout = 5000')
    db.pragma('foreign_keys = ON')
    // an in-memory database has no WAL to checkpoint
    if (file === ':memory:') return new SqliteStore(db, file)
    setFallbackAutocheckpoint(db)
    return new SqliteStore(db, file, new Checkpointer(file))
  }
  if (url.startsWith('mysql://') || url.startsWith('mariadb://')) {
    const mysql = await import('mysql2/promise')
    const u = new URL(url.replace(/^mariadb:/, 'mysql:'))
    if (u.pathname.length <= 1) {
      throw new ConfigError('E_STORE_URL', `store.url ${redact(url)} names no database.`, {hint: 'Try this: mysql://user:password@127.0.0.1:3306/mq'})
    }
    const pool = mysql.createPool({
      charset: 'utf8mb4',
      connectionLimit: 10,
      connectTimeout: 5000,
      database: decodeURIComponent(u.pathname.slice(1)),
      host: u.hostname,
      password: decodeURIComponent(u.password),
      port: u.port ? Number(u.port) : 3306,
      supportBigNumbers: true,
      timezone: 'Z',
      user: decodeURIComponent(u.username) || 'root',
    })
    const store = new MysqlStore(pool, redact(url))
    try {
      await store.ping()
    } catch (error) {
      await pool.end().catch(() => {})
      throw new UnavailableError('E_STORE_UNAVAILABLE', `Cannot reach the MySQL store at ${redact(url)}: ${(error as Error).message}`, {
        cause: error,
        hint: 'Try this: check that MySQL/MariaDB runs and that store.url (MQ_STORE_URL) is right.',
      })
    }
    return store
  }
  throw new ConfigError('E_STORE_URL', `store.url ${JSON.stringify(redact(url))} is neither "sqlite" nor a mysql:// URL.`, {hint: 'Try this: store.url: sqlite, or mysql://user:password@host:3306/db'})
}

/** Hides the password of a URL (user:pass@, also :pass@ and passwords holding an unescaped @). */
export function redact(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^/]*@/, '//$1:***@')
}

/**
 * Applies pending migrations in order, each in a transaction, recording them in `table`.
 * Safe to call at every start; two processes racing are serialised by the primary key.
 */
export async function migrate(store: SqlStore, table: string, migrations: Migration[]): Promise<number[]> {
  if (!/^[a-z_][a-z0-9_]*$/.test(table)) throw new Error(`bad migrations table name ${table}`)
  await store.run(`CREATE TABLE IF NOT EXISTS ${table} (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL, applied_at VARCHAR(40) NOT NULL)`)
  const done = new Set((await store.all<{id: number}>(`SELECT id FROM ${table}`)).map((r) => Number(r.id)))
  const applied: number[] = []
  for (const m of [...migrations].sort((a, b) => a.id - b.id)) {
    if (done.has(m.id)) continue
    const stmts = store.dialect === 'sqlite' ? m.sqlite : m.mysql
    // MySQL DDL commits implicitly, so statements run one by one and the record goes last.
    for (const sql of stmts) await store.run(sql)
    await store.run(`INSERT INTO ${table} (id, name, applied_at) VALUES (?, ?, ?)`, [m.id, m.name, new Date().toISOString()])
    applied.push(m.id)
  }
  return applied
}
