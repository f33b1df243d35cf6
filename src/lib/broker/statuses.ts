/**
 * The message status journal: answers "what happened last to message X" for `STATUS` /
 * `mq message status`, over the most recent `capacity` status changes.
 *
 * Every publish, delivery and ack changes a status, so this sits on the hottest path, while a
 * status query is an operator's occasional question. A Map keyed by message id cost two hash
 * updates per message (the top item of the broker's profile at 100k msg/s: long string keys,
 * a large table, constant growth and eviction); a ring of (id, code) pairs costs two array writes,
 * and a query scans it backwards (a few milliseconds at the default capacity).
 */
import {type MessageStatus, STATUS_NAMES} from '../wire/types.js'

export {type MessageStatus, STATUS_NAMES} from '../wire/types.js'
export const STATUS_CODE: Record<MessageStatus, number> = Object.fromEntries(STATUS_NAMES.map((s, i) => [s, i])) as Record<MessageStatus, number>

/** codes pack status + 16 * queue index */
const STATUS_BITS = 16

export class StatusJournal {
  private readonly ids: (string | undefined)[]
  private readonly codes: Int32Array
  private pos = 0
  private readonly queueIds = new Map<string, number>()
  private readonly queueNames: string[] = ['']
  /** the queue of the last call, so the common case skips the name lookup */
  private lastQueue = ''
  private lastQueueId = 0

  constructor(readonly capacity = 300_000) {
    this.capacity = Math.max(1, Math.floor(capacity))
    this.ids = new Array<string | undefined>(this.capacity)
    this.codes = new Int32Array(this.capacity)
  }

  set(id: string, status: MessageStatus, queue?: string): void {
    const p = this.pos
    this.ids[p] = id
    this.codes[p] = STATUS_CODE[status] + STATUS_BITS * (queue === undefined ? 0 : this.queueId(queue))
    this.pos = p + 1 === this.capacity ? 0 : p + 1
  }

  /** the latest status of a message, or null when it is unknown or was forgotten */
  get(id: string): {messageId: string; status: MessageStatus; queue?: string} | null {
    const n = this.capacity
    for (let k = 1, p = this.pos; k <= n; k++) {
      p = p === 0 ? n - 1 : p - 1
      const v = this.ids[p]
      if (v === undefined) return null
      if (v === id) {
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
