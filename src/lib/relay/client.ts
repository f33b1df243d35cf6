import {type Socket, connect} from 'node:net'
import * as tls from 'node:tls'

import {MqError, TempFailError, UnavailableError} from '../errors.js'
import {
  ERROR_CODE,
  type OpCode,
  PULL_ENTRY_HEADER_BYTES,
  type ProtocolVersion,
  RESPONSE_HEADER_BYTES,
  decodePullEntryHeader,
  decodeResponseHeader,
  encodeRequestHeader,
  encodeSendHeader,
  responseCode,
  SEND_HEADER_BYTES,
} from './protocol.js'
import {EndOfStream, SocketReader, StallTimeout, writeFlow} from './reader.js'

export interface RelayAddress {
  host: string
  port: number
}

/** A send whose content is at most this goes out as one write with its headers (a copy this small is cheaper than a second syscall). */
const ONE_WRITE_MAX = 64 * 1024

/** Replies other than a pull are small: refuse to buffer more than this. */
const MAX_SMALL_REPLY = 64 * 1024 * 1024

export interface PullEntry {
  sender: Buffer
  messageId: number
  type: number
  size: number
}

/**
 * One persistent connection to a relay speaking exact frames (several requests in a row).
 * Small replies are buffered; a pull reply is handed over entry by entry so file contents
 * stream to their destination.
 */
export class RelayConnection {
  private constructor(
    private readonly sock: Socket,
    private readonly reader: SocketReader,
    readonly version: ProtocolVersion,
    readonly address: RelayAddress,
  ) {}

  static connect(address: RelayAddress, version: ProtocolVersion, timeoutMs = 10_000, tlsOptions?: tls.ConnectionOptions): Promise<RelayConnection> {
    return new Promise((resolve, reject) => {
      // Our CA is the trust anchor; the relay's certificate need not name the address dialled.
      const sock: Socket = tlsOptions ? tls.connect({...tlsOptions, checkServerIdentity: () => undefined, host: address.host, port: address.port}) : connect({host: address.host, port: address.port})
      const timer = setTimeout(() => {
        sock.destroy()
        reject(new TempFailError('E_RELAY_TIMEOUT', `Timed out connecting to the relay at ${address.host}:${address.port}.`, {hint: 'Try this: check that `mq relay start` runs there.'}))
      }, timeoutMs)
      sock.once('error', (error) => {
        clearTimeout(timer)
        reject(
          new UnavailableError('E_RELAY_UNAVAILABLE', `Cannot reach the relay at ${address.host}:${address.port}: ${error.message}`, {
            cause: error,
            hint: 'Try this: start it with `mq relay start`, or point --relay / MQ_RELAY / server.info at the right host:port.',
          }),
        )
      })
      sock.once(tlsOptions ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer)
        sock.setNoDelay(true)
        sock.on('error', () => {})
        resolve(new RelayConnection(sock, new SocketReader(sock, timeoutMs, 1024 * 1024), version, address))
      })
    })
  }

  close(): void {
    this.sock.end()
    this.sock.destroy()
  }

  private lost(error: unknown): MqError {
    if (error instanceof MqError) return error
    if (error instanceof StallTimeout) return new TempFailError('E_RELAY_TIMEOUT', `The relay did not answer within ${error.ms} ms.`, {hint: 'Try this: retry; check the relay\'s log.'})
    if (error instanceof EndOfStream) {
      return new UnavailableError('E_RELAY_CLOSED', 'The relay closed the connection mid-reply.', {hint: 'Try this: retry; check the relay\'s log for the reason.'})
    }
    return new UnavailableError('E_RELAY_IO', `Relay connection failed: ${(error as Error).message}`, {cause: error, hint: 'Try this: retry.'})
  }

  private async readHeader(op: OpCode, what: string): Promise<{payloadSize: number}> {
    const h = decodeResponseHeader(await this.reader.read(RESPONSE_HEADER_BYTES))
    if (h.code === ERROR_CODE) {
      if (h.payloadSize > 0 && h.payloadSize <= MAX_SMALL_REPLY) await this.reader.skip(h.payloadSize)
      throw new MqError('E_RELAY_REFUSED', `The relay refused the ${what} request (9000).`, {
        hint: 'Try this: check the name and that you are registered (`mq relay register NAME`); the relay log says why.',
      })
    }
    const want = responseCode(this.version, op)
    if (h.code !== want) throw new MqError('E_RELAY_PROTOCOL', `The relay answered code ${h.code} to a ${what} request (expected ${want}).`, {hint: 'Try this: check that --relay points at an mq or MessageU relay.'})
    return h
  }

  /** One request with a small reply; throws E_RELAY_REFUSED on 9000. */
  async call(clientId: Buffer, op: OpCode, payload: Buffer, what: string): Promise<Buffer> {
    try {
      await writeFlow(this.sock, Buffer.concat([encodeRequestHeader(this.version, clientId, op, payload.length), payload]))
      const h = await this.readHeader(op, what)
      if (h.payloadSize > MAX_SMALL_REPLY) throw new MqError('E_RELAY_PROTOCOL', `The relay's ${what} reply claims ${h.payloadSize} bytes.`, {hint: 'Try this: check the relay.'})
      return await this.reader.read(h.payloadSize)
    } catch (error) {
      throw this.lost(error)
    }
  }

  /** A send (603) whose content streams from `content` (exactly `size` bytes in total). */
  async send(clientId: Buffer, op: OpCode, destination: Buffer, type: number, size: number, content: AsyncIterable<Buffer> | Buffer): Promise<Buffer> {
    try {
      const head = [encodeRequestHeader(this.version, clientId, op, SEND_HEADER_BYTES + size), encodeSendHeader(destination, type, size)]
      let sent = 0
      if (Buffer.isBuffer(content) && content.length <= ONE_WRITE_MAX) {
        // one write, so one segment: a separate header write cost a syscall and a packet per text
        await writeFlow(this.sock, Buffer.concat([head[0], head[1], content]))
        sent = content.length
      } else if (Buffer.isBuffer(content)) {
        await writeFlow(this.sock, Buffer.concat(head))
        await writeFlow(this.sock, content)
        sent = content.length
      } else {
        await writeFlow(this.sock, Buffer.concat(head))
        for await (const chunk of content) {
          if (chunk.length === 0) continue
          await writeFlow(this.sock, chunk)
          sent += chunk.length
        }
      }
      if (sent !== size) throw new Error(`content was ${sent} bytes, announced ${size}`)
      const h = await this.readHeader(op, 'send')
      return this.reader.readNow(h.payloadSize) ?? (await this.reader.read(h.payloadSize))
    } catch (error) {
      // The relay may refuse (9000) and close before the content was all written: say so.
      if (!(error instanceof MqError) && this.reader.available >= RESPONSE_HEADER_BYTES && decodeResponseHeader(this.reader.peek(RESPONSE_HEADER_BYTES)).code === ERROR_CODE) {
        throw new MqError('E_RELAY_REFUSED', `The relay refused the ${size}-byte message (9000) before it was sent in full.`, {
          hint: 'Try this: check the relay\'s limits (relay.max_file_bytes, relay.max_text_bytes) and its log.',
        })
      }
      throw this.lost(error)
    }
  }

  /**
   * A pull (604): `onEntry` gets each entry's header and must consume exactly `size` bytes with
   * the given reader functions.
   */
  async pull(clientId: Buffer, op: OpCode, onEntry: (e: PullEntry, body: {read: (n: number) => Promise<Buffer>; stream: (sink: (c: Buffer) => void | Promise<void>) => Promise<void>}) => Promise<void>): Promise<number> {
    try {
      await writeFlow(this.sock, encodeRequestHeader(this.version, clientId, op, 0))
      const h = await this.readHeader(op, 'pull')
      let left = h.payloadSize
      let count = 0
      while (left > 0) {
        if (left < PULL_ENTRY_HEADER_BYTES) throw new MqError('E_RELAY_PROTOCOL', 'The relay sent a truncated message entry.', {hint: 'Try this: retry.'})
        const e = decodePullEntryHeader(await this.reader.read(PULL_ENTRY_HEADER_BYTES))
        left -= PULL_ENTRY_HEADER_BYTES
        if (e.size > left) throw new MqError('E_RELAY_PROTOCOL', `A message entry claims ${e.size} bytes but only ${left} remain.`, {hint: 'Try this: retry.'})
        let consumed = 0
        await onEntry(e, {
          read: async (n) => {
            consumed += n
            return this.reader.read(n)
          },
          stream: async (sink) => {
            const n = e.size - consumed
            consumed += n
            await this.reader.stream(n, sink)
          },
        })
        if (consumed < e.size) await this.reader.skip(e.size - consumed)
        left -= e.size
        count++
      }
      return count
    } catch (error) {
      throw this.lost(error)
    }
  }
}
