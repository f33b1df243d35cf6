import {createHash} from 'node:crypto'

export type Verdict = 'PASS' | 'FAIL'

/** One line of the chaos ledger. */
export interface LedgerLine {
  scenario: string
  sent: number
  /** confirmed by the broker, or accepted (202) by the proxy */
  confirmed: number
  received: number
  lost: number
  duplicated: number
  corrupt: number
  verdict: Verdict
  seconds: number
  /** what else was measured, and why a verdict is FAIL */
  notes: string[]
}

/** The payload of message `id`: its id and a digest of it, so a delivery can be checked byte for byte. */
export function payloadFor(id: string, pad = 0): Buffer {
  const d = createHash('sha256').update(id).digest('hex').slice(0, 24)
  return Buffer.from(`${id}|${d}|${'.'.repeat(pad)}`)
}

export function payloadOk(id: string, body: Buffer): boolean {
  const s = body.toString()
  const [bid, d] = s.split('|')
  return bid === id && d === createHash('sha256').update(id).digest('hex').slice(0, 24)
}

/**
 * Counts what was sent, confirmed and received per message id. lost = confirmed but never received;
 * duplicated = received more than once as a new delivery (a flagged redelivery of an unacknowledged
 * message is at-least-once delivery working, not a duplicate); corrupt = a body that is not the one sent.
 */
export class Tally {
  readonly sent = new Set<string>()
  readonly confirmed = new Set<string>()
  private readonly fresh = new Map<string, number>()
  private readonly seen = new Set<string>()
  corrupt = 0

  send(id: string): void {
    this.sent.add(id)
  }

  /** A probe's successful requests count as messages sent, confirmed and received whole. */
  served(count: number): void {
    for (let i = 0; i < count; i++) {
      this.send(`p${i}`)
      this.confirm(`p${i}`)
      this.receive(`p${i}`, true, false)
    }
  }

  confirm(id: string): void {
    this.confirmed.add(id)
  }

  receive(id: string, ok: boolean, redelivered: boolean): void {
    this.seen.add(id)
    if (!ok) this.corrupt++
    if (!redelivered) this.fresh.set(id, (this.fresh.get(id) ?? 0) + 1)
  }

  has(id: string): boolean {
    return this.seen.has(id)
  }

  get received(): number {
    return this.seen.size
  }

  get lost(): number {
    let n = 0
    for (const id of this.confirmed) if (!this.seen.has(id)) n++
    return n
  }

  get duplicated(): number {
    let n = 0
    for (const c of this.fresh.values()) if (c > 1) n += c - 1
    return n
  }

  /** `dupAllowed`: publishes retried after a lost confirm (each may be stored twice); other duplicates fail */
  line(scenario: string, t0: number, notes: string[], extraFail = false, dupAllowed = 0): LedgerLine {
    const l = {confirmed: this.confirmed.size, corrupt: this.corrupt, duplicated: this.duplicated, lost: this.lost, notes, received: this.received, scenario, seconds: Math.round((Date.now() - t0) / 100) / 10, sent: this.sent.size}
    // the battery's promise is lost 0 and corrupt 0; a duplicate is allowed only for a publish retried after
    // its confirm was lost (at-least-once: the first copy may have been committed)
    return {...l, verdict: l.lost === 0 && l.corrupt === 0 && l.duplicated <= dupAllowed && !extraFail ? 'PASS' : 'FAIL'}
  }
}

export function formatLine(l: LedgerLine): string {
  const c = (k: string, v: number | string, w: number) => `${k} ${String(v).padStart(w)}`
  return [l.scenario.padEnd(24), c('sent', l.sent, 6), c('confirmed', l.confirmed, 6), c('received', l.received, 6), c('lost', l.lost, 4), c('dup', l.duplicated, 4), c('corrupt', l.corrupt, 3), l.verdict, `${l.seconds}s`, l.notes.length ? `| ${l.notes.join('; ')}` : ''].join('  ').trimEnd()
}
