/**
 * The message status journal: answers "what happened last to message X" for `STATUS` /
 * `mq message status`, over the most recent `capacity` status changes.
 *
 * Every publish, delivery and ack changes a status, so this sits on the hottest path, while a
 * status query is an operator's occasional question. A Map keyed by message id cost two hash
 * updates per message (the top item of the broker's profile at 100k msg/s: long string keys,
 * a large table, constant growth and eviction); a ring of (id, code) pairs costs two array writes,
 * and a query scans it backwards (a few milliseconds at the default capacity).
 *
 * The ring keeps a 64-bit hash of each id, not the id (issue 15): 300,000 retained id strings were
 * ~27 MB of the broker's old generation (the largest live item while a backlog drains), and every
 * id was promoted there. Two ids with the same 64 bits would share an answer; among 300,000 entries
 * the chance that any other id matches a queried one is about 2e-14.
 */
import {randomBytes} from 'node:crypto'

import {type MessageStatus, STATUS_NAMES} from '../wire/types.js'

export {type MessageStatus, STATUS_NAMES} from '../wire/types.js'
export const STATUS_CODE: Record<MessageStatus, number> = Object.fromEntries(STATUS_NAMES.map((s, i) => [s, i])) as Record<MessageStatus, number>

/** codes pack status + 16 * queue index */
const STATUS_BITS = 16

export class StatusJournal {
  /** two independent 32-bit hashes of each id (see idHash) */
  private readonly h1: Int32Array
  private readonly h2: Int32Array
  private readonly codes: Int32Array
  private pos = 0
  /** slots written so far (up to capacity): a query scans no further */
  private filled = 0
  private readonly queueIds = new Map<string, number>()
  private readonly queueNames: string[] = ['']
  /** the queue of the last call, so the common case skips the name lookup */
  private lastQueue = ''
  private lastQueueId = 0

  constructor(readonly capacity = 300_000) {
    this.capacity = Math.max(1, Math.floor(capacity))
    this.h1 = new Int32Array(this.capacity)
    this.h2 = new Int32Array(this.capacity)
    this.codes = new Int32Array(this.capacity)
  }

  set(id: string, status: MessageStatus, queue?: string): void {
    idHash(id)
    this.put(hashOut[0], hashOut[1], status, queue)
  }

  /**
   * set() for a message that carries its id's hashes (Message.idHash1/2): a message's id is hashed
   * once, when it first gets a status, instead of at every change (publish, delivery, ack: about
   * 100 ns each for a 36-character id, measured in-process).
   */
  setFor(m: {messageId: string; idHash1: number; idHash2: number}, status: MessageStatus, queue?: string): void {
    if (m.idHash1 === 0 && m.idHash2 === 0) {
      idHash(m.messageId)
      m.idHash1 = hashOut[0]
      m.idHash2 = hashOut[1]
    }
    this.put(m.idHash1, m.idHash2, status, queue)
  }

  private put(a: number, b: number, status: MessageStatus, queue?: string): void {
    const p = this.pos
    this.h1[p] = a
    this.h2[p] = b
    if (this.filled < this.capacity) this.filled++
    this.codes[p] = STATUS_CODE[status] + STATUS_BITS * (queue === undefined ? 0 : this.queueId(queue))
    this.pos = p + 1 === this.capacity ? 0 : p + 1
  }

  /** the latest status of a message, or null when it is unknown or was forgotten */
  get(id: string): {messageId: string; status: MessageStatus; queue?: string} | null {
    const n = this.capacity
    idHash(id)
    const a = hashOut[0]
    const b = hashOut[1]
    for (let k = 1, p = this.pos; k <= this.filled; k++) {
      p = p === 0 ? n - 1 : p - 1
      if (this.h1[p] === a && this.h2[p] === b) {
        const code = this.codes[p]
        const qid = Math.floor(code / STATUS_BITS)
        return {messageId: id, status: STATUS_NAMES[code % STATUS_BITS], ...(qid > 0 ? {queue: this.queueNames[qid]} : {})}
      }
    }
    return null
  }

  private queueId(queue: string): number {
    if (queue === this.lastQueue) return this.lastQueueId
    let qid = this.queueIds.get(queue)
    if (qid === undefined) {
      qid = this.queueNames.push(queue) - 1
      this.queueIds.set(queue, qid)
    }
    this.lastQueue = queue
    this.lastQueueId = qid
    return qid
  }
}

const hashOut = new Int32Array(2)
// Seeds drawn per process (the journal lives in memory only): a client cannot make up, offline, an id
// whose hash matches another client's message id and so change what STATUS answers for it.
const SEED = new Int32Array(randomBytes(8).buffer, 0, 2)

/** FNV-1a and a multiply-rotate hash of the id's UTF-16 units, seeded, in one pass, into hashOut */
function idHash(id: string): void {
  let a = (0x811c9dc5 ^ SEED[0]) | 0
  let b = (0x9747b28c ^ SEED[1]) | 0
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i)
    a = Math.imul(a ^ c, 0x01000193)
    b = Math.imul(b ^ c, 0x5bd1e995)
    b ^= b >>> 15
  }
  hashOut[0] = a
  hashOut[1] = Math.imul(b ^ id.length, 0x27d4eb2d) ^ (b >>> 13)
}

/** the two 32-bit hashes of an id in this process (tests: they differ between processes) */
export function idHashOf(id: string): [number, number] {
  idHash(id)
  return [hashOut[0], hashOut[1]]
}
