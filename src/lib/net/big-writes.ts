import type net from 'node:net'

/** chunks from this size on reach the TLS layer on their own (see separateBigWrites) */
export const BIG_WRITE = 16 * 1024

type Chunk = {chunk: Buffer | string; encoding: BufferEncoding}
type Writev = (chunks: Chunk[], cb: (err?: Error | null) => void) => void

/**
 * Node's TLS socket joins the chunks of a writev (what cork/uncork, or writes queued behind a busy
 * socket, turn into) into one freshly allocated buffer before SSL_write; one chunk alone is encrypted
 * where it is. For a big message body that join was a copy into new memory, page-faulted in for every
 * message: a quarter of the broker's CPU at 1 MiB. With this, a writev's big chunks go down as writes
 * of their own and only runs of small chunks are still joined (one TLS record for a tick's small frames).
 * The order of bytes and the single completion callback of the writev are kept.
 */
export function separateBigWrites(sock: net.Socket): void {
  const s = sock as net.Socket & {_writev: Writev; _write: (data: Buffer | string, encoding: BufferEncoding, cb: (err?: Error | null) => void) => void}
  const writev = s._writev
  const write = s._write
  if (typeof writev !== 'function' || typeof write !== 'function') return
  s._writev = function (this: typeof s, chunks, cb) {
    let big = false
    for (let i = 0; i < chunks.length; i++) if (chunks[i].chunk.length >= BIG_WRITE) big = true
    if (!big) {
      writev.call(this, chunks, cb)
      return
    }
    // runs of small chunks stay one writev; each big chunk is a write of its own, one after the other
    const groups: Chunk[][] = []
    let run: Chunk[] = []
    for (const c of chunks) {
      if (c.chunk.length < BIG_WRITE) run.push(c)
      else {
        if (run.length > 0) groups.push(run)
        run = []
        groups.push([c])
      }
    }
    if (run.length > 0) groups.push(run)
    let g = 0
    const next = (err?: Error | null): void => {
      if (err || g === groups.length) {
        cb(err)
        return
      }
      const group = groups[g++]
      if (group.length === 1) write.call(this, group[0].chunk, group[0].encoding, next)
      else writev.call(this, group, next)
    }
    next()
  }
}
