/**
 * The broker store's writer thread: it owns the only write connection to broker.db and commits
 * each batch it receives in one transaction (synchronous=FULL: one fsync per batch), so disk
 * latency never blocks the broker's event loop. See store.ts for the batching side.
 */
import Database from 'better-sqlite3'
import {parentPort, workerData} from 'node:worker_threads'

import {REC_COUNT, REC_DELETE, REC_INSERT, type WireOp} from './store.js'

const {file, synchronous, role} = workerData as {file: string; synchronous: 'FULL' | 'NORMAL'; role: 'writer' | 'checkpointer'}
const db = new Database(file)
db.pragma('journal_mode = WAL')
db.pragma(`synchronous = ${synchronous}`)

if (role === 'checkpointer') {
  // Checkpoints (copying the WAL into the database file, with its fsync) run on their own thread and
  // connection, concurrently with the writer: a commit never waits behind one, which keeps the tail
  // latency of confirms down. PASSIVE never blocks the writer.
  const timer = setInterval(() => {
    try {
      db.pragma('wal_checkpoint(PASSIVE)')
    } catch {
      // busy or closing: the next round (or the writer's fallback) catches up
    }
  }, 250)
  parentPort!.on('message', () => {
    clearInterval(timer)
    db.close()
    parentPort!.postMessage({closed: true})
  })
} else startWriter()

function startWriter(): void {
  // the checkpointer thread does the work; this is only a fallback if it falls far behind (64 MiB)
  db.pragma('wal_autocheckpoint = 16000')

  const ins = db.prepare('INSERT INTO messages (seq, queue, message_id, exchange, routing_key, headers, body, ts, delivery_count, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)')
  const del = db.prepare('DELETE FROM messages WHERE seq = ?')
  const cnt = db.prepare('UPDATE messages SET delivery_count = ? WHERE seq = ?')
  const exch = db.prepare('INSERT OR REPLACE INTO exchanges (name, type) VALUES (?, ?)')
  const queue = db.prepare('INSERT OR REPLACE INTO queues (name, dead_letter, ttl_ms, max_length) VALUES (?,?,?,?)')
  const bind = db.prepare('INSERT OR IGNORE INTO bindings (exchange, queue, routing_key) VALUES (?,?,?)')
  const dq = [db.prepare('DELETE FROM queues WHERE name = ?'), db.prepare('DELETE FROM bindings WHERE queue = ?'), db.prepare('DELETE FROM messages WHERE queue = ?')]
  const key = db.prepare('INSERT OR REPLACE INTO keys (name, enc_cert, sign_cert, updated_at) VALUES (?,?,?,?)')

  function applyPacked(view: Uint8Array): void {
    const buf = Buffer.from(view.buffer, view.byteOffset, view.byteLength)
    let p = 0
    const str = () => {
      const n = buf.readUInt32LE(p)
      const v = buf.toString('utf8', p + 4, p + 4 + n)
      p += 4 + n
      return v
    }
    while (p < buf.length) {
      const kind = buf[p++]
      const seq = buf.readDoubleLE(p)
      p += 8
      if (kind === REC_INSERT) {
        const queueName = str()
        const messageId = str()
        const exchange = str()
        const routingKey = str()
        const headers = str()
        const ts = buf.readDoubleLE(p)
        const count = buf.readUInt32LE(p + 8)
        const expires = buf.readDoubleLE(p + 12)
        const len = buf.readUInt32LE(p + 20)
        p += 24
        ins.run(seq, queueName, messageId, exchange, routingKey, headers || null, buf.subarray(p, p + len), ts, count, expires)
        p += len
      } else if (kind === REC_DELETE) {
        del.run(seq)
      } else if (kind === REC_COUNT) {
        cnt.run(buf.readUInt32LE(p), seq)
        p += 4
      } else throw new Error(`corrupt batch: record kind ${kind}`)
    }
  }

  const apply = db.transaction((ops: (WireOp | Uint8Array)[]) => {
    for (const op of ops) {
      if (op instanceof Uint8Array) {
        applyPacked(op)
        continue
      }
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

  parentPort!.on('message', (msg: {id: number; ops: (WireOp | Uint8Array)[]} | {close: true}) => {
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
}
