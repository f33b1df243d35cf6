/**
 * Publish deduplication by message id, for publishers that ask for it (the records plugin's
 * deliver path). The window remembers which ids were published, into which queues, until the
 * publisher settles them (it has recorded the delivery elsewhere), or they grow older than
 * `windowMs`, or more than `max` are remembered (oldest forgotten first).
 *
 * For a publish that reached a durable queue the id is also written to the durable store, in the
 * same group commit (one SQLite transaction) as the message itself: after a crash between the
 * publish and the publisher's own record, the retried publish is recognised instead of stored twice.
 * Publishes that reached only memory queues are remembered in memory: a crash loses them anyway.
 */

/** What the window needs from the durable store (DurableStore implements it). */
export interface DedupeLog {
  rememberPublished(seq: number, messageId: string, queues: string[], at: number): void
  forgetPublished(seq: number): void
  loadPublished(): Iterable<{seq: number; messageId: string; queues: string[]; at: number}>
}

export interface DedupeOptions {
  /** how long an unsettled id is remembered (ms) */
  windowMs: number
  /** how many unsettled ids are remembered at most */
  max: number
  now?: () => number
  log?: DedupeLog
}

interface Entry {
  seq: number
  id: string
  at: number
  queues: string[]
  durable: boolean
  live: boolean
}

export const DEFAULT_DEDUPE_WINDOW_MS = 24 * 3600 * 1000
export const DEFAULT_DEDUPE_MAX = 100_000

export class DedupeWindow {
  private readonly byId = new Map<string, Entry>()
  /** entries in publish order; settled ones stay until they reach the head or a compaction */
  private order: Entry[] = []
  private head = 0
  private seq = 0
  private readonly windowMs: number
  private readonly max: number
  private readonly now: () => number
  private readonly log?: DedupeLog

  constructor(opts: DedupeOptions) {
    this.windowMs = opts.windowMs
    this.max = Math.max(1, opts.max)
    this.now = opts.now ?? Date.now
    this.log = opts.log
  }

  get size(): number {
    return this.byId.size
  }

  /** Loads the durable ids (after a restart); those outside the window are forgotten on disk too. */
  restore(): void {
    if (!this.log) return
    for (const r of this.log.loadPublished()) {
      this.seq = Math.max(this.seq, r.seq)
      const old = this.byId.get(r.messageId)
      if (old) this.drop(old)
      const e: Entry = {at: r.at, durable: true, id: r.messageId, live: true, queues: r.queues, seq: r.seq}
      this.byId.set(e.id, e)
      this.order.push(e)
    }
    this.trim()
  }

  /** The queues an id was published into, if it is remembered. */
  get(id: string): {queues: string[]; durable: boolean} | undefined {
    const e = this.byId.get(id)
    if (!e) return undefined
    if (this.now() - e.at > this.windowMs) {
      this.drop(e)
      return undefined
    }
    return e
  }

  /** Remembers a publish; `durable` ids are written with the publish's own group commit. */
  add(id: string, queues: string[], durable: boolean): void {
    const old = this.byId.get(id)
    if (old) this.drop(old)
    const e: Entry = {at: this.now(), durable: durable && this.log !== undefined, id, live: true, queues, seq: ++this.seq}
    this.byId.set(id, e)
    this.order.push(e)
    if (e.durable) this.log!.rememberPublished(e.seq, id, queues, e.at)
    this.trim()
  }

  /** The publisher has recorded the delivery itself: the id need not be remembered any more. */
  settle(id: string): boolean {
    const e = this.byId.get(id)
    if (!e) return false
    this.drop(e)
    this.trim()
    return true
  }

  private drop(e: Entry): void {
    if (!e.live) return
    e.live = false
    if (this.byId.get(e.id) === e) this.byId.delete(e.id)
    if (e.durable) this.log?.forgetPublished(e.seq)
  }

  /** Forgets from the head: settled entries, expired ones, and any beyond `max`. */
  private trim(): void {
    const cutoff = this.now() - this.windowMs
    while (this.head < this.order.length) {
      const e = this.order[this.head]
      if (e.live && e.at >= cutoff && this.byId.size <= this.max) break
      this.drop(e)
      this.order[this.head++] = undefined as never
    }
    // settled entries behind a long-lived head: compact, so memory follows the live count
    const held = this.order.length - this.head
    if (this.head > 1024 && this.head * 2 > this.order.length) {
      this.order = this.order.slice(this.head)
      this.head = 0
    } else if (held > 2 * this.byId.size + 1024) {
      this.order = this.order.slice(this.head).filter((x) => x.live)
      this.head = 0
    }
  }
}

/**
 * How the durable store keeps published ids: one row (a block) per group commit holding all the ids
 * that group published, instead of a row per id, so deduplication adds no per-message statement to a
 * commit. Ids of one block have increasing seqs; a block's row is deleted once all its ids are forgotten.
 * (A crash may bring back ids of a partly forgotten block: they are then remembered again until the
 * window drops them, which costs memory, never a lost publish.)
 */
export class DedupeBlocks {
  private firsts: number[] = []
  private lasts: number[] = []
  private left: number[] = []
  private head = 0
  /** emptied blocks at or after the head */
  private empty = 0

  /** A block of `count` ids with seqs first..last (in one row keyed by `first`). */
  add(first: number, last: number, count: number): void {
    this.firsts.push(first)
    this.lasts.push(last)
    this.left.push(count)
  }

  /** One id of a block forgotten; returns the block's key when that was its last id (delete the row). */
  forget(seq: number): number | undefined {
    let lo = this.head
    let hi = this.firsts.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >> 1
      if (this.lasts[mid] < seq) lo = mid + 1
      else if (this.firsts[mid] > seq) hi = mid - 1
      else {
        if (this.left[mid] <= 0 || --this.left[mid] > 0) return undefined
        const key = this.firsts[mid]
        this.empty++
        while (this.head < this.firsts.length && this.left[this.head] <= 0) {
          this.head++
          this.empty--
        }
        // empty blocks behind a long-lived one (or at the head): drop them, keeping the order
        if (this.head + this.empty > 1024 && 2 * (this.head + this.empty) > this.firsts.length) {
          const keep = (_: number, i: number) => i >= this.head && this.left[i] > 0
          this.firsts = this.firsts.filter(keep)
          this.lasts = this.lasts.filter(keep)
          this.left = this.left.filter((n) => n > 0)
          this.head = 0
          this.empty = 0
        }
        return key
      }
    }
    return undefined
  }

  /** blocks with ids not yet forgotten */
  get size(): number {
    return this.firsts.length - this.head - this.empty
  }
}
