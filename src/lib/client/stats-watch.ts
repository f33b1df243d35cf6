/**
 * `mq stats --watch`: the broker's figures every interval over one connection, as `nats top` shows
 * them. On a terminal the screen is redrawn in place; otherwise (a pipe, a file, a log collector) one
 * line per interval is written, or one JSON object per line with --json, so nothing needs a terminal.
 */
import {snakeKeys} from '../util/case.js'
import type {BrokerStats} from '../wire/types.js'
import type {BrokerClient} from './client.js'

const CLEAR = '\x1b[H\x1b[2J'

function pad(s: string | number, n: number, left = false): string {
  const t = String(s)
  if (t.length >= n) return t.slice(0, n)
  return left ? t + ' '.repeat(n - t.length) : ' '.repeat(n - t.length) + t
}

function totals(st: BrokerStats): {ready: number; unacked: number; consumers: number} {
  let ready = 0
  let unacked = 0
  let consumers = 0
  for (const q of st.queues) {
    ready += q.messages
    unacked += q.unacked
    consumers += q.consumers
  }
  return {consumers, ready, unacked}
}

/** One line per interval (not a terminal, no --json). */
export function statsLine(st: BrokerStats, at: Date): string {
  const t = totals(st)
  return `${at.toISOString()} connections=${st.connections} queues=${st.queues.length} ready=${t.ready} unacked=${t.unacked} consumers=${t.consumers} publish/s=${st.rates.publish} deliver/s=${st.rates.deliver} ack/s=${st.rates.ack}${st.memory?.alarm ? ' ALARM=memory' : ''}`
}

/** One JSON object per line (--json): the STATS figures in snake_case and the time they were read. */
export function statsJsonLine(st: BrokerStats, at: Date): string {
  return JSON.stringify({time: at.toISOString(), ...(snakeKeys(st) as object)})
}

/** The terminal view: a header and the busiest queues first, cut to the terminal's height. */
export function statsScreen(st: BrokerStats, at: Date, target: string, size: {rows: number; columns: number}): string {
  const t = totals(st)
  const lines = [
    `mq stats --watch   ${target}   ${at.toISOString().replace('T', ' ').slice(0, 19)}   (Ctrl-C to stop)`,
    `connections ${st.connections}   queues ${st.queues.length}   exchanges ${st.exchangeCount}   bindings ${st.bindingCount}   ready ${t.ready}   unacked ${t.unacked}   consumers ${t.consumers}`,
    `rates/s  publish ${st.rates.publish}   deliver ${st.rates.deliver}   ack ${st.rates.ack}${st.memory?.alarm ? '   ALARM: memory above the high watermark, publishers paused' : ''}`,
    '',
    `${pad('QUEUE', 32, true)} ${pad('READY', 9)} ${pad('UNACKED', 9)} ${pad('CONS', 5)} ${pad('PUB/S', 9)} ${pad('DELIV/S', 9)} ${pad('ACK/S', 9)}`,
  ]
  const queues = [...st.queues].sort((a, b) => b.messages + b.unacked - (a.messages + a.unacked) || b.publishRate - a.publishRate || a.name.localeCompare(b.name))
  const room = Math.max(1, size.rows - lines.length - 1)
  for (const q of queues.slice(0, room)) lines.push(`${pad(q.name, 32, true)} ${pad(q.messages, 9)} ${pad(q.unacked, 9)} ${pad(q.consumers, 5)} ${pad(q.publishRate, 9)} ${pad(q.deliverRate, 9)} ${pad(q.ackRate, 9)}`)
  if (queues.length > room) lines.push(`... ${queues.length - room} more (mq stats --json for all)`)
  return CLEAR + lines.map((l) => l.slice(0, Math.max(20, size.columns))).join('\n') + '\n'
}

export interface WatchOptions {
  intervalMs: number
  mode: 'screen' | 'lines' | 'json'
  target: string
  write: (text: string) => void
  /** resolves when the watch should stop (Ctrl-C) */
  stop: Promise<void>
  size?: () => {rows: number; columns: number}
}

/** Reads STATS every interval until `stop` resolves; returns how many views were written. */
export async function watchStats(c: BrokerClient, o: WatchOptions): Promise<number> {
  let stopped = false
  void o.stop.then(() => (stopped = true))
  let views = 0
  while (!stopped) {
    const started = Date.now()
    const st = await c.stats()
    if (stopped) break
    const at = new Date()
    if (o.mode === 'json') o.write(statsJsonLine(st, at) + '\n')
    else if (o.mode === 'lines') o.write(statsLine(st, at) + '\n')
    else o.write(statsScreen(st, at, o.target, o.size?.() ?? {columns: 120, rows: 40}))
    views++
    const wait = Math.max(0, o.intervalMs - (Date.now() - started))
    await Promise.race([new Promise((r) => setTimeout(r, wait)), o.stop])
  }
  return views
}
