import {Worker} from 'node:worker_threads'

/**
 * Checkpoints of an embedded SQLite database on a thread of their own. Left to SQLite, a checkpoint
 * runs inside whichever COMMIT crosses wal_autocheckpoint, with its fsync, on the committing thread:
 * for the records store that was the broker's event loop (11% of its time under proxy load), for
 * the message store the writer thread (the tail of confirm latency). Writers keep a high
 * wal_autocheckpoint (setFallbackAutocheckpoint) only as a bound if this thread falls behind.
 */
/** the WAL size (bytes) beyond which a writer checkpoints itself: 16,000 pages of 4 KiB */
const FALLBACK_WAL_BYTES = 16_000 * 4096

/** Sets db's wal_autocheckpoint to FALLBACK_WAL_BYTES in its own pages, so the bound is the same whatever its page size. */
export function setFallbackAutocheckpoint(db: {pragma(source: string, options?: {simple?: boolean}): unknown}): void {
  const pageBytes = db.pragma('page_size', {simple: true}) as number
  db.pragma(`wal_autocheckpoint = ${Math.max(1, Math.round(FALLBACK_WAL_BYTES / pageBytes))}`)
}

export class Checkpointer {
  private readonly worker: Worker
  private closed = false
  private ready = false

  constructor(file: string, opts: {intervalMs?: number; synchronous?: 'FULL' | 'NORMAL'} = {}) {
    this.worker = new Worker(new URL('./checkpoint-worker.js', import.meta.url), {workerData: {file, intervalMs: opts.intervalMs ?? 250, synchronous: opts.synchronous ?? 'NORMAL'}})
    this.worker.unref()
    this.worker.on('error', () => {}) // the writers' fallback checkpoints keep the WAL bounded
    this.worker.once('message', () => (this.ready = true))
  }

  /** Stops the thread and closes its connection (waits at most 2 s for it). */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    // a short-lived CLI command must not wait for a thread that has not even opened the database
    if (!this.ready) {
      await this.worker.terminate()
      return
    }
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 2000)
      this.worker.once('message', () => {
        clearTimeout(t)
        resolve()
      })
      this.worker.once('exit', () => {
        clearTimeout(t)
        resolve()
      })
      this.worker.postMessage({close: true})
    })
    await this.worker.terminate()
  }
}
