/**
 * The checkpointer thread of an embedded SQLite database in WAL mode (see checkpointer.ts): its own
 * connection copies the WAL into the database file, with that copy's fsync, every intervalMs.
 * PASSIVE never blocks a writer.
 */
import Database from 'better-sqlite3'
import {parentPort, workerData} from 'node:worker_threads'

const {file, intervalMs, synchronous} = workerData as {file: string; intervalMs: number; synchronous: 'FULL' | 'NORMAL'}
const db = new Database(file)
db.pragma('journal_mode = WAL')
db.pragma(`synchronous = ${synchronous}`)
db.pragma('busy_timeout = 1000')
const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)')
  } catch {
    // busy or closing: the next round (or the writers' fallback) catches up
  }
}, intervalMs)
parentPort!.postMessage({ready: true})
parentPort!.on('message', () => {
  clearInterval(timer)
  db.close()
  parentPort!.postMessage({closed: true})
})
