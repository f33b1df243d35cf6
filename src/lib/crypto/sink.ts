/**
 * Where `mq recv` puts accepted messages: raw payloads or JSON lines on stdout, and/or
 * CipherMQ Receiver-style JSON lines appended to an --out file.
 */
import {closeSync, fsyncSync, openSync, writeSync} from 'node:fs'

import {MqError, UsageError} from '../errors.js'
import type {Delivery} from '../wire/types.js'
import {type ReceiveSink, type Received, jsonRecord, outRecord} from './recv.js'

/** stdout (raw or JSON lines) and/or an --out file; flush() waits for stdout and fsyncs the file. */
export class OutputSink implements ReceiveSink<Delivery> {
  private fd?: number
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
      try {
        this.fd = openSync(file, 'a', 0o600)
      } catch (error) {
        throw new UsageError('E_OUT_FILE', `Cannot open --out ${file}: ${(error as Error).message}`, {hint: 'Try this: check the directory exists and is writable.'})
      }
    }
    process.stdout.on('error', this.onError)
  }

  write(r: Received, d: Delivery): void {
    if (this.fd !== undefined) writeSync(this.fd, JSON.stringify(outRecord(r)) + '\n')
    if (this.mode === 'json') process.stdout.write(JSON.stringify(jsonRecord(r, {queue: d.queue, redelivered: d.redelivered})) + '\n')
    else if (this.mode === 'raw') {
      process.stdout.write(r.payload)
      if (this.lines) process.stdout.write('\n')
    }
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
