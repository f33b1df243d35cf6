/**
 * The broker-wide memory high watermark (RabbitMQ's vm_memory_high_watermark): above it the broker
 * raises an alarm, publishers are paused by TCP back-pressure (their sockets stop being read, as the
 * per-queue flow control does) and /health and `mq stats` say why; below it they resume. Consumers,
 * acks and commits keep going, so the broker works its way back under the mark instead of running
 * out of memory.
 */
import {readFileSync} from 'node:fs'
import {totalmem} from 'node:os'
import {setFlagsFromString} from 'node:v8'

/**
 * How far V8 lets the old generation grow past what the last full GC found alive, in percent
 * (broker.heap_growing_percent; 0 = V8's own factor). V8 reads the factor at every full GC, so it can
 * be set after start (flags that size the heap cannot). With V8's own factor (up to 2x and more) a
 * draining backlog, whose windowed messages and page reads all pass through the old generation, let
 * the heap swing between ~25 and ~55 MiB and the freed buffers wait for it: 1 KiB backlog, 200,000
 * messages, broker RSS peak publish 228 -> 199 MiB, drain 265 -> 181 MiB with 25 (issue 15).
 */
export function limitHeapGrowth(percent: number): void {
  setFlagsFromString(`--heap-growing-percent=${Math.max(0, Math.round(percent))}`)
}

/** ready messages (in memory or paged out) from which a broker holds a backlog (see HeapGrowthGovernor.backlog) */
export const BACKLOG_MESSAGES = 10_000

/**
 * Caps heap growth only while the broker is big (RSS above broker.heap_growing_above) and holds a
 * backlog: the cap costs the hot path dearly, which a broker far from its memory goal need not pay.
 * V8 applies the growing factor to its global limit, ArrayBuffer memory included, so at 25 % the
 * buffers every message passes through (TLS chunks, frame bodies, store batches, output arenas)
 * forced a full GC every few MB (28 mark-compacts per 30,000 durable 4 KiB messages): in-memory
 * 4 KiB, the broker's CPU per message was 26-27 us capped against 16-19 us uncapped, 256 B 2.9-3.2
 * against 2.0-2.2 us (interleaved A/B; RSS under load ~50 MiB higher uncapped). A broker's RSS
 * under plain load (no backlog) is above 160 MiB by now, so RSS alone no longer told a
 * busy broker from a big one. Below 85 % of the threshold, or without a backlog, V8's own factor
 * comes back (0), so a broker that has drained its backlog is fast again.
 */
export class HeapGrowthGovernor {
  capped = false
  private timer: NodeJS.Timeout | undefined
  /** true while the broker holds a backlog (set once the engine exists; unset: always) */
  backlog?: () => boolean

  constructor(
    private readonly percent: number,
    /** bytes of RSS above which growth is capped; 0 = always capped */
    private readonly aboveRss: number,
    private readonly readRss: () => number = () => process.memoryUsage.rss(),
    private readonly apply: (percent: number) => void = limitHeapGrowth,
  ) {}

  /** One sample: caps or releases growth when RSS crossed the threshold (with hysteresis) or the backlog came or went. */
  check(): void {
    if (this.percent <= 0) return
    const rss = this.readRss()
    const cap = (this.aboveRss <= 0 || rss > (this.capped ? this.aboveRss * 0.85 : this.aboveRss)) && (this.backlog?.() ?? true)
    if (cap === this.capped) return
    this.capped = cap
    this.apply(cap ? this.percent : 0)
  }

  start(intervalMs = 250): this {
    this.check()
    this.timer = setInterval(() => this.check(), intervalMs)
    this.timer.unref()
    return this
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }
}

/** The memory a watermark fraction is taken of: the cgroup's limit when there is one, else the machine's. */
export function memoryLimit(): number {
  let limit = totalmem()
  try {
    const v = readFileSync('/sys/fs/cgroup/memory.max', 'utf8').trim()
    if (/^\d+$/.test(v)) limit = Math.min(limit, Number(v))
  } catch {
    // no cgroup v2 limit
  }
  return limit
}

/** broker.memory_high_watermark: a fraction (0 < x <= 1) of memoryLimit(), or an absolute number of bytes (> 1). */
export function resolveWatermark(setting: number): number {
  return setting <= 1 ? Math.floor(memoryLimit() * setting) : Math.floor(setting)
}

export interface MemoryState {
  /** resident set size of the broker process, bytes, at the last check */
  rss: number
  highWatermark: number
  alarm: boolean
}

export class MemoryWatermark {
  alarm = false
  rss = 0
  private waiters: (() => void)[] = []
  constructor(
    /** bytes; 0 = no watermark */
    public highWatermark: number,
    public onChange?: (s: MemoryState) => void,
  ) {}

  /**
   * Samples the process's RSS (what an out-of-memory kill looks at). Cheap (one syscall): the engine
   * calls it a few times a second, not per message.
   */
  check(): void {
    this.rss = process.memoryUsage.rss()
    const over = this.highWatermark > 0 && this.rss > this.highWatermark
    if (over === this.alarm) return
    this.alarm = over
    this.onChange?.(this.state())
    if (!over) {
      const w = this.waiters
      this.waiters = []
      for (const cb of w) cb()
    }
  }

  /** Calls back once the alarm is clear (right away when it is). */
  whenBelow(cb: () => void): void {
    if (!this.alarm) cb()
    else this.waiters.push(cb)
  }

  state(): MemoryState {
    return {alarm: this.alarm, highWatermark: this.highWatermark, rss: this.rss}
  }
}
