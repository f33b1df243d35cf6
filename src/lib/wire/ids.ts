import {randomUUID} from 'node:crypto'

/** 3 hex digits per number below 4096: the low part of an id comes from here instead of toString/padStart */
const HEX3 = Array.from({length: 4096}, (_, i) => i.toString(16).padStart(3, '0'))

/**
 * Message ids when the publisher names none: UUID-shaped and unique, a random prefix per instance and
 * a 48-bit counter in hex (randomUUID per message is costly, and so is formatting the counter anew).
 */
export class MessageIds {
  private readonly prefix = randomUUID().slice(0, 24)
  private seq = 0
  private high = ''

  next(): string {
    const n = ++this.seq
    const low = n & 0xfff
    if (low === 0 || this.high === '') this.high = this.prefix + Math.floor(n / 4096).toString(16).padStart(9, '0')
    return this.high + HEX3[low]
  }
}

/**
 * A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then 74 random bits (from randomUUID's pooled
 * randomness). Random v4 ids landed each new record on a random leaf of a SQLite index keyed by them
 * (the proxy's records store, a receiver's replay database), so a batch of n ids wrote about n pages
 * per commit; ids that grow with time land on the last page or two. Unique as a v4 id is within a
 * millisecond (74 random bits), and they tell no more than the time a message was sent.
 */
export function timeOrderedUuid(now = Date.now()): string {
  const r = randomUUID()
  const t = now.toString(16).padStart(12, '0').slice(-12)
  return `${t.slice(0, 8)}-${t.slice(8)}-7${r.slice(15)}`
}
