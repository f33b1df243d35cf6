/**
 * The broker store's writer thread: it owns the only write connection to broker.db and commits
 * each batch it receives in one transaction (synchronous=FULL: one fsync per batch), so disk
 * latency never blocks the broker's event loop. See store.ts for the batching side.
 */
import Database from 'better-sqlite3'
import {parentPort, workerData} from 'node:worker_threads'

import type {WireOp} from './store.js'

const {file, synchronous} = workerData as {file: string; synchronous: 'FULL' | 'NORMAL'}
const db = new Database(file)
db.pragma('journal_mode = WAL')
db.pragma(`synchronous = ${synchronous}`)
// checkpoints happen here too, off the event loop; keep the WAL from growing without bound
db.pragma('wal_autocheckpoint = 4000')

const ins = db.prepare('INSERT OR REPLACE INTO messages (seq, queue, message_id, exchange, routing_key, headers, body, ts, delivery_count, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)')
const del = db.prepare('DELETE FROM messages WHERE seq = ?')
const cnt = db.prepare('UPDATE messages SET delivery_count = ? WHERE seq = ?')
const exch = db.prepare('INSERT OR REPLACE INTO exchanges (name, type) VALUES (?, ?)')
const queue = db.prepare('INSERT OR REPLACE INTO queues (name, dead_letter, ttl_ms, max_length) VALUES (?,?,?,?)')
const bind = db.prepare('INSERT OR IGNORE INTO bindings (exchange, queue, routing_key) VALUES (?,?,?)')
const dq = [db.prepare('DELETE FROM queues WHERE name = ?'), db.prepare('DELETE FROM bindings WHERE queue = ?'), db.prepare('DELETE FROM messages WHERE queue = ?')]
const key = db.prepare('INSERT OR REPLACE INTO keys (name, enc_cert, sign_cert, updated_at) VALUES (?,?,?,?)')

const apply = db.transaction((ops: WireOp[]) => {
  for (const op of ops) {
    switch (op[0]) {
      case 'i':
        ins.run(op[1], op[2], op[3], op[4], op[5], op[6], op[7], op[8], op[9], op[10])
        break
      case 'd':
        del.run(op[1])
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
        for (const s of dq) s.run(op[1])
        break
      case 'k':
        key.run(op[1], op[2], op[3], Date.now())
        break
    }
  }
})

parentPort!.on('message', (msg: {id: number; ops: WireOp[]} | {close: true}) => {
  if ('close' in msg) {
    db.close()
    parentPort!.postMessage({closed: true})
    return
  }
  try {
    apply(msg.ops)
    parentPort!.postMessage({id: msg.id})
  } catch (error) {
    parentPort!.postMessage({error: (error as Error).message, id: msg.id})
  }
})
