import type {Redis, Result} from 'ioredis'

// Each XADD and the stream's length right after it, for many messages in one atomic script: one
// command per batch instead of one script run per request. A reply per message: its "position".
const ENQUEUE_MANY = `
local out = {}
for i = 1, #ARGV, 2 do
  redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'client', ARGV[i + 1], 'attempts', '0')
  out[#out + 1] = redis.call('XLEN', KEYS[1])
end
return out
`

/** at most this many messages per script run, so one run never holds Redis for long */
const MAX_BATCH = 512

interface Pending {
  messageId: string
  clientId: string
  resolve: (position: number) => void
  reject: (e: Error) => void
}

/**
 * Enqueues message references in the ingest stream, coalescing the requests of one turn of the
 * event loop into one script run. A request still learns its own outcome: its promise resolves
 * only once Redis has answered for the batch (so "accepted" still means "in Redis"), and a failed
 * batch rejects every request in it.
 */
export class EnqueueBatcher {
  private queue: Pending[] = []
  private scheduled = false

  constructor(
    private readonly redis: Redis,
    private readonly stream: string,
  ) {
    if (!redis.enqueueMany) redis.defineCommand('enqueueMany', {lua: ENQUEUE_MANY, numberOfKeys: 1})
  }

  /** Resolves with the stream's length right after this message was added. */
  enqueue(messageId: string, clientId: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.queue.push({clientId, messageId, reject, resolve})
      if (this.scheduled) return
      this.scheduled = true
      // after every continuation queued in this turn has had its chance to join
      process.nextTick(() => this.flush())
    })
  }

  private flush(): void {
    this.scheduled = false
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_BATCH)
      this.redis.enqueueMany(this.stream, ...batch.flatMap((p) => [p.messageId, p.clientId])).then(
        (positions) => {
          if (!Array.isArray(positions) || positions.length !== batch.length) {
            const e = new Error(`Redis answered ${Array.isArray(positions) ? positions.length : 'no'} positions for ${batch.length} messages`)
            for (const p of batch) p.reject(e)
            return
          }
          for (const [i, p] of batch.entries()) p.resolve(Number(positions[i]))
        },
        (error: Error) => {
          for (const p of batch) p.reject(error)
        },
      )
    }
  }
}

declare module 'ioredis' {
  interface RedisCommander<Context> {
    enqueueMany(streamKey: string, ...idClientPairs: string[]): Result<number[], Context>
  }
}
