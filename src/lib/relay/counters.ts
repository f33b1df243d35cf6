import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'

import {DataError} from '../errors.js'
import {assertPrivateFile, ensurePrivateDir, writeSecretFile} from '../util/fs.js'
import {withLockFile} from '../util/lockfile.js'

/**
 * The strong suite's replay defence, in $MQ_HOME/relay/counters.json (0600):
 *
 *   sent      per peer id: the last counter this home put on a message to that peer
 *   received  per peer id: the counters accepted from that peer, as a floor (everything at or
 *             below it is refused) and the RECENT highest counters above it
 *
 * The relay stores ciphertexts it cannot read, so it could hand the same stored text, file or key
 * to its recipient twice. Every strong-suite message of types 2-4 therefore carries its sender's
 * counter inside what is authenticated (GCM associated data, or the key's signature): the
 * recipient accepts each counter from a peer once. Counters only grow: max(last + 1, the clock in
 * microseconds), so a sender that lost this file still produces counters its peers accept.
 *
 * Bounded: RECENT counters per peer (a sender's messages arrive in order unless it sent several
 * at once, so a small window of out-of-order arrivals is enough) and MAX_PEERS peers, the least
 * recently heard from dropped first (a peer dropped that way could have its old messages accepted
 * once more: only after 4096 other peers wrote since). Updates are read-modify-write under counters.lock, so
 * concurrent sends never reuse a counter and concurrent fetches never both accept one.
 */
export const RECENT = 128
export const MAX_PEERS = 4096

interface ReceivedState {
  floor: string
  recent: string[]
}

interface CountersFile {
  sent: Record<string, string>
  received: Record<string, ReceivedState>
}

export type CounterVerdict = 'new' | 'replay' | 'too_old'

export class RelayCounters {
  constructor(
    private readonly dir: string,
    private readonly limits = {peers: MAX_PEERS, recent: RECENT},
  ) {}

  get file(): string {
    return join(this.dir, 'counters.json')
  }

  private get lock(): string {
    return join(this.dir, 'counters.lock')
  }

  /** The next counter for a message to `peerId` (hex), recorded before it is used. */
  async next(peerId: string): Promise<bigint> {
    return this.update((f) => {
      const last = BigInt(own(f.sent, peerId) ?? '0')
      const now = BigInt(Date.now()) * 1000n
      const c = last + 1n > now ? last + 1n : now
      f.sent[peerId] = c.toString()
      return c
    })
  }

  /** What accept() would say, without recording: lets a file be refused before it is written. */
  check(peerId: string, counter: bigint): CounterVerdict {
    return verdict(own(this.read().received, peerId), counter)
  }

  /** Records an authenticated counter from `peerId`; 'new' only the first time it is seen. */
  async accept(peerId: string, counter: bigint): Promise<CounterVerdict> {
    return this.update((f) => {
      const st = own(f.received, peerId)
      const v = verdict(st, counter)
      if (v !== 'new') return v
      const recent = [...(st?.recent ?? []).map((x) => BigInt(x)), counter].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
      let floor = BigInt(st?.floor ?? '0')
      while (recent.length > this.limits.recent) floor = recent.shift()!
      // keys keep insertion order (hex ids are never array indices): re-inserting puts the
      // peer last, so the front is always the least recently heard from
      delete f.received[peerId]
      f.received[peerId] = {floor: floor.toString(), recent: recent.map(String)}
      const peers = Object.keys(f.received)
      for (const p of peers.slice(0, Math.max(0, peers.length - this.limits.peers))) delete f.received[p]
      return v
    })
  }

  private read(): CountersFile {
    const f = this.file
    if (!existsSync(f)) return {received: Object.create(null), sent: Object.create(null)}
    assertPrivateFile(f)
    let parsed: Partial<CountersFile>
    try {
      parsed = JSON.parse(readFileSync(f, 'utf8')) as Partial<CountersFile>
    } catch (error) {
      throw new DataError('E_RELAY_COUNTERS', `${f} is not valid JSON: ${(error as Error).message}`, {
        hint: `Try this: remove ${f}; messages already received could then be accepted once more if the relay sent them again.`,
      })
    }
    // peer ids are hex, but a null-prototype object keeps any key a plain key
    return {received: Object.assign(Object.create(null), parsed.received ?? {}), sent: Object.assign(Object.create(null), parsed.sent ?? {})}
  }

  private update<T>(fn: (f: CountersFile) => T): Promise<T> {
    ensurePrivateDir(this.dir)
    return withLockFile(this.lock, {code: 'E_RELAY_LOCKED', holder: 'mq relay'}, () => {
      const f = this.read()
      const out = fn(f)
      writeSecretFile(this.file, JSON.stringify({received: f.received, sent: f.sent}) + '\n')
      return out
    })
  }

}

function own<T>(o: Record<string, T>, key: string): T | undefined {
  return Object.prototype.hasOwnProperty.call(o, key) ? o[key] : undefined
}

function verdict(st: ReceivedState | undefined, counter: bigint): CounterVerdict {
  if (!st) return 'new'
  if (counter <= BigInt(st.floor)) return 'too_old'
  return st.recent.includes(counter.toString()) ? 'replay' : 'new'
}
