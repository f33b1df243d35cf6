/**
 * At most `size` operations in flight, for publish loops that wait for confirms. A counter and a FIFO of
 * waiters: Promise.race over the in-flight set attached a reaction to every pending promise for each new
 * one (O(window) work per message), and a single `wake` slot lost wake-ups when two callers waited.
 */
export class Window {
  private inflight = 0
  private readonly waiters: Array<() => void> = []
  private idleWaiters: Array<() => void> = []

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`window size must be a positive integer, got ${size}`)
  }

  get pending(): number {
    return this.inflight
  }

  /** Resolves once a slot is free and takes it; pair every acquire with one release. */
  async acquire(): Promise<void> {
    while (this.inflight >= this.size) await new Promise<void>((r) => this.waiters.push(r))
    this.inflight++
  }

  /** Frees a slot; bound so it can be passed straight to then(). */
  readonly release = (): void => {
    if (this.inflight === 0) throw new Error('Window.release without a matching acquire')
    this.inflight--
    this.waiters.shift()?.()
    if (this.inflight === 0 && this.idleWaiters.length > 0) {
      const idle = this.idleWaiters
      this.idleWaiters = []
      for (const r of idle) r()
    }
  }

  /** Resolves when nothing is in flight. */
  async idle(): Promise<void> {
    if (this.inflight === 0) return
    await new Promise<void>((r) => this.idleWaiters.push(r))
  }
}
