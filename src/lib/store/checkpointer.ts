import {Worker} from 'node:worker_threads'

/**
 * Checkpoints of an embedded SQLite database on a thread of their own. Left to SQLite, a checkpoint
 * runs inside whichever COMMIT crosses wal_autocheckpoint, with its fsync, on the committing thread:
 * for the records store that was the broker's event loop (11% of its time under proxy load), for
 * the message store the writer thread (the tail of confirm latency). Writers keep a high
 * wal_autocheckpoint (FALLBACK_AUTOCHECKPOINT_PAGES) only as a bound if this thread falls behind.
 */
export const FALLBACK_AUTOCHECKPOINT_PAGES = 16_000

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
