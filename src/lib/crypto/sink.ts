/**
 * Where `mq recv` puts accepted messages: raw payloads or JSON lines on stdout, and/or
 * CipherMQ Receiver-style JSON lines appended to an --out file.
 */
import {closeSync, fstatSync, fsyncSync, ftruncateSync, openSync, readSync, writeSync} from 'node:fs'
import {resolve} from 'node:path'

import {MqError, UsageError} from '../errors.js'
import type {Delivery} from '../wire/types.js'
import {type ReceiveSink, type Received, jsonRecord, outRecord} from './recv.js'
import type {PriorAcceptance} from './replay.js'

const NEWLINE = Buffer.from('\n')

/** stdout (raw or JSON lines) and/or an --out file; flush() waits for stdout and fsyncs the file. */
export class OutputSink implements ReceiveSink<Delivery> {
  private fd?: number
  private readonly path?: string
  private error?: Error
  private readonly onError = (e: Error): void => {
    this.error ??= e
  }

  constructor(
    private readonly mode: 'raw' | 'json' | 'none',
    private readonly lines: boolean,
    file?: string,
  ) {
    if (file) {
      this.path = resolve(file)
      try {
        this.fd = openSync(file, 'a+', 0o600)
      } catch (error) {
        throw new UsageError('E_OUT_FILE', `Cannot open --out ${file}: ${(error as Error).message}`, {hint: 'Try this: check the directory exists and is writable.'})
      }
    }
    process.stdout.on('error', this.onError)
  }

  write(r: Received, d: Delivery): void {
    if (this.fd !== undefined) writeSync(this.fd, JSON.stringify(outRecord(r)) + '\n')
    if (this.mode === 'json') process.stdout.write(JSON.stringify(jsonRecord(r, {queue: d.queue, redelivered: d.redelivered})) + '\n')
    // one write per message: a crash between two writes would leave a line without its newline
    else if (this.mode === 'raw') process.stdout.write(this.lines ? Buffer.concat([r.payload, NEWLINE]) : r.payload)
  }

  position(): {path?: string; offset?: number} {
    return this.fd === undefined ? {} : {offset: fstatSync(this.fd).size, path: this.path}
  }

  /**
   * After a crash mid-write, the --out file is the record of what was written: the lines appended
   * since the batch began are searched for the message id. A torn last line (no newline: the crash
   * cut a write short) is cut off before the message is written again. Stdout cannot be read back.
   */
  recover(r: Received, prior: PriorAcceptance): 'written' | 'absent' | 'unknown' {
    if (this.fd === undefined || prior.outPath !== this.path || prior.outOffset === null) return 'unknown'
    const size = fstatSync(this.fd).size
    if (size < prior.outOffset) return 'unknown' // the file was truncated or replaced since
    const tail = Buffer.alloc(size - prior.outOffset)
    let got = 0
    while (got < tail.length) {
      const n = readSync(this.fd, tail, got, tail.length - got, prior.outOffset + got)
      if (n === 0) break
      got += n
    }
    const lastNl = tail.lastIndexOf(0x0a)
    for (const line of tail.subarray(0, lastNl + 1).toString('utf8').split('\n')) {
      if (line === '') continue
      try {
        if ((JSON.parse(line) as {message_id?: unknown}).message_id === r.message_id) return 'written'
      } catch {
        // not one of our lines: keep looking
      }
    }
    if (lastNl + 1 < tail.length) ftruncateSync(this.fd, prior.outOffset + lastNl + 1)
    return 'absent'
  }

  async flush(): Promise<void> {
    if (this.fd !== undefined) fsyncSync(this.fd)
    if (this.mode !== 'none') {
      await new Promise<void>((resolve) => {
        process.stdout.write('', (err) => {
          if (err) this.error ??= err
          resolve()
        })
      })
    }
    if (this.error) {
      const closed = (this.error as NodeJS.ErrnoException).code === 'EPIPE'
      throw new MqError(closed ? 'E_OUTPUT_CLOSED' : 'E_OUTPUT', closed ? 'The output was closed before the messages were written.' : `Cannot write the output: ${this.error.message}`, {
        hint: 'Try this: nothing was lost: the messages not written were returned to the queue.',
      })
    }
  }

  close(): void {
    process.stdout.off('error', this.onError)
    if (this.fd !== undefined) closeSync(this.fd)
  }
}
