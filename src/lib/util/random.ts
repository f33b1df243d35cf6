import {randomBytes} from 'node:crypto'

/**
 * Random bytes drawn from the CSPRNG in blocks. On these machines one randomBytes(12) call costs
 * about 17 µs (a system call each time), as much as the AES-GCM sealing it serves; from a block it
 * costs next to nothing. Every byte is handed out once: a spent block is replaced, never refilled
 * in place, so slices already returned keep their bytes.
 */
const BLOCK = 16 * 1024
let block = Buffer.alloc(0)
let at = 0

/** n fresh random bytes (n small: nonces, ids); larger requests go to randomBytes directly. */
export function randomChunk(n: number): Buffer {
  if (n > BLOCK / 4) return randomBytes(n)
  if (at + n > block.length) {
    block = randomBytes(BLOCK)
    at = 0
  }
  at += n
  return block.subarray(at - n, at)
}
