/**
 * A byte-level mutator for the fuzzers: deterministic from a seed, so a run can be replayed.
 * Each input is a corpus entry put through 1-6 mutations (bit flips, interesting integers,
 * dictionary tokens, block insert/delete/duplicate, splices with another entry, ASCII numbers).
 */
export class Rng {
  private s: number

  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9
  }

  next(): number {
    // xorshift32: fast and good enough to pick mutations
    let x = this.s
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    this.s = x >>> 0
    return this.s
  }

  int(n: number): number {
    return n <= 1 ? 0 : this.next() % n
  }

  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]
  }
}

const INTERESTING8 = [0, 1, 0x7f, 0x80, 0xff, 0x0a, 0x0d, 0x20, 0x3d, 0x25]
const INTERESTING32 = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x3ff, 0x400, 0x401, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff]
const NUMBERS = ['0', '-1', '1', '4294967295', '4294967296', '9007199254740993', '1e309', 'NaN', '65536', '99999999999999999999', '0x10', '-0', '']

export class Mutator {
  constructor(
    private readonly rng: Rng,
    private readonly dict: Buffer[],
    private readonly maxLen: number,
  ) {}

  mutate(base: Buffer, other: () => Buffer): Buffer {
    let b: Buffer = Buffer.from(base)
    const rounds = 1 + this.rng.int(6)
    for (let i = 0; i < rounds; i++) b = this.once(b, other)
    return b.length > this.maxLen ? b.subarray(0, this.maxLen) : b
  }

  private once(b: Buffer, other: () => Buffer): Buffer {
    const r = this.rng
    const at = (len = b.length) => r.int(len + 1)
    switch (r.int(12)) {
      case 0: {
        if (b.length === 0) return Buffer.from([r.int(256)])
        const i = r.int(b.length)
        b[i] ^= 1 << r.int(8)
        return b
      }
      case 1: {
        if (b.length === 0) return b
        b[r.int(b.length)] = r.pick(INTERESTING8)
        return b
      }
      case 2: {
        if (b.length < 4) return b
        const i = r.int(b.length - 3)
        const v = r.pick(INTERESTING32)
        if (r.int(2) === 0) b.writeUInt32BE(v >>> 0, i)
        else b.writeUInt32LE(v >>> 0, i)
        return b
      }
      case 3: {
        if (b.length < 2) return b
        const i = r.int(b.length - 1)
        b.writeUInt16BE(r.pick(INTERESTING32) & 0xffff, i)
        return b
      }
      case 4: {
        if (this.dict.length === 0) return b
        const i = at()
        return Buffer.concat([b.subarray(0, i), r.pick(this.dict), b.subarray(i)])
      }
      case 5: {
        // delete a block
        if (b.length === 0) return b
        const i = r.int(b.length)
        const n = 1 + r.int(Math.min(64, b.length - i))
        return Buffer.concat([b.subarray(0, i), b.subarray(i + n)])
      }
      case 6: {
        // duplicate a block
        if (b.length === 0) return b
        const i = r.int(b.length)
        const n = 1 + r.int(Math.min(256, b.length - i))
        const times = 1 + r.int(4)
        const blk = b.subarray(i, i + n)
        return Buffer.concat([b.subarray(0, i + n), ...Array.from({length: times}, () => blk), b.subarray(i + n)])
      }
      case 7: {
        // insert random bytes
        const n = 1 + r.int(16)
        const rnd = Buffer.alloc(n)
        for (let k = 0; k < n; k++) rnd[k] = r.int(256)
        const i = at()
        return Buffer.concat([b.subarray(0, i), rnd, b.subarray(i)])
      }
      case 8: {
        // splice with another corpus entry
        const o = other()
        const i = at()
        const j = r.int(o.length + 1)
        return Buffer.concat([b.subarray(0, i), o.subarray(j)])
      }
      case 9: {
        // truncate
        return b.subarray(0, at())
      }
      case 10: {
        // replace an ASCII number with an awkward one
        const s = b.toString('latin1')
        const m = [...s.matchAll(/\d+/g)]
        if (m.length === 0) return b
        const x = r.pick(m)
        return Buffer.concat([b.subarray(0, x.index), Buffer.from(r.pick(NUMBERS)), b.subarray(x.index! + x[0].length)])
      }
      default: {
        // overwrite a random byte
        if (b.length === 0) return b
        b[r.int(b.length)] = r.int(256)
        return b
      }
    }
  }
}
