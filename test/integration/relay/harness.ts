import {type ChildProcess, spawn} from 'node:child_process'
import {generateKeyPairSync} from 'node:crypto'
import {type Socket, connect} from 'node:net'
import {join} from 'node:path'

import {Logger} from '../../../src/lib/log.js'
import {Op, type OpCode, type ProtocolVersion, RESPONSE_HEADER_BYTES, decodeResponseHeader, encodeRegisterPayload, encodeRequest} from '../../../src/lib/relay/protocol.js'
import {EndOfStream, SocketReader} from '../../../src/lib/relay/reader.js'
import {Journal} from '../../../src/lib/relay/journal.js'
import {RelayServer} from '../../../src/lib/relay/server.js'
import {RelayStore, type RelayStoreOptions} from '../../../src/lib/relay/store.js'

export interface RunningRelay {
  server: RelayServer
  store: RelayStore
  port: number
  stop: () => Promise<void>
}

/** An in-process relay over a temp home's store (SQLite unless `url` names MySQL). */
export async function startRelay(opts: {home: string; url?: string; idleTimeoutMs?: number; maxFileBytes?: number; maxTextBytes?: number; port?: number; logger?: Logger; journal?: RelayStoreOptions['journal']}): Promise<RunningRelay> {
  const store = await RelayStore.open({dataDir: join(opts.home, 'data'), journal: opts.journal, url: opts.url ?? 'sqlite'})
  const server = new RelayServer({
    filesDir: join(opts.home, 'data', 'relay-files'),
    host: '127.0.0.1',
    idleTimeoutMs: opts.idleTimeoutMs ?? 30_000,
    logger: opts.logger,
    maxFileBytes: opts.maxFileBytes ?? 8 * 1024 * 1024,
    maxTextBytes: opts.maxTextBytes ?? 1024 * 1024,
    port: opts.port ?? 0,
    store,
  })
  await server.start()
  return {
    port: server.port,
    server,
    async stop() {
      await server.stop()
      await store.close()
    },
    store,
  }
}

/**
 * The size of each commit of the relay's messages from now on: a journal write on SQLite (one per
 * turn or pipeline), a multi-row transaction otherwise (single-row commits are not counted there).
 */
/**
 * A relay in a child process (so that it can be killed) on `home`, and its port; `journal` as for
 * RelayStore.open (a long flushMs holds acknowledged messages in the journal alone).
 */
export async function childRelay(home: string, journal?: RelayStoreOptions['journal']): Promise<{proc: ChildProcess; port: number}> {
  const server = new URL('../../../src/lib/relay/server.js', import.meta.url).href
  const store = new URL('../../../src/lib/relay/store.js', import.meta.url).href
  const script = `
    const {RelayServer} = await import(${JSON.stringify(server)})
    const {RelayStore} = await import(${JSON.stringify(store)})
    const store = await RelayStore.open({dataDir: ${JSON.stringify(join(home, 'data'))}, journal: ${JSON.stringify(journal)}, url: 'sqlite'})
    const server = new RelayServer({filesDir: ${JSON.stringify(join(home, 'data', 'relay-files'))}, host: '127.0.0.1', idleTimeoutMs: 30000, maxFileBytes: 1 << 20, maxTextBytes: 1 << 20, port: 0, store})
    await server.start()
    process.stdout.write('PORT ' + server.port + '\\n')`
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script], {stdio: ['ignore', 'pipe', 'inherit']})
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /PORT (\d+)/.exec(out)
      if (m) resolve(Number(m[1]))
    })
    proc.once('exit', (code) => reject(new Error(`relay child exited with ${code}`)))
  })
  return {port, proc}
}

export function watchCommits(store: RelayStore): {sizes: number[]; restore: () => void} {
  const sizes: number[] = []
  const {sql} = store
  const runBatch = sql.runBatch.bind(sql)
  const append = Journal.prototype.append
  sql.runBatch = (q, list) => {
    sizes.push(list.length)
    return runBatch(q, list)
  }
  Journal.prototype.append = function (records) {
    sizes.push(records.length)
    return append.call(this, records)
  }
  return {
    restore() {
      sql.runBatch = runBatch
      Journal.prototype.append = append
    },
    sizes,
  }
}

export interface RawResponse {
  version: number
  code: number
  payload: Buffer
}

/** A byte-level client: writes exactly what a test builds, reads exactly what the relay sends. */
export class RawClient {
  readonly reader: SocketReader
  private constructor(readonly sock: Socket) {
    this.reader = new SocketReader(sock, 5000, 1 << 30)
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect({host: '127.0.0.1', port})
      s.once('error', reject)
      s.once('connect', () => {
        s.on('error', () => {})
        resolve(new RawClient(s))
      })
    })
  }

  write(buf: Buffer): void {
    this.sock.write(buf)
  }

  async response(): Promise<RawResponse> {
    const h = decodeResponseHeader(await this.reader.read(RESPONSE_HEADER_BYTES))
    return {code: h.code, payload: await this.reader.read(h.payloadSize), version: h.version}
  }

  /** Reads a reply that must be zero-padded to a 1024 multiple (padded framing). */
  async paddedResponse(): Promise<RawResponse & {total: number}> {
    const r = await this.response()
    const used = RESPONSE_HEADER_BYTES + r.payload.length
    const pad = used % 1024 === 0 ? 0 : 1024 - (used % 1024)
    const padding = await this.reader.read(pad)
    if (!padding.every((b) => b === 0)) throw new Error('padding is not zero')
    return {...r, total: used + pad}
  }

  /** Resolves with the bytes that arrived until the relay closed the connection. */
  async untilClosed(): Promise<Buffer> {
    const out: Buffer[] = []
    try {
      for (;;) out.push(await this.reader.read(1))
    } catch (error) {
      if (!(error instanceof EndOfStream)) throw error
    }
    return Buffer.concat(out)
  }

  /** True if nothing more arrives and the connection is still open after `ms`. */
  async staysOpen(ms: number): Promise<boolean> {
    await new Promise((r) => setTimeout(r, ms))
    return !this.reader.isEnded
  }

  close(): void {
    this.sock.destroy()
  }
}

export const v2Key = (fill = 0x5a): Buffer => Buffer.alloc(160, fill)

/** A real RSA-2048 SPKI for protocol v3 registrations. */
export function v3Key(): Buffer {
  return generateKeyPairSync('rsa', {modulusLength: 2048}).publicKey.export({format: 'der', type: 'spki'})
}

/** Registers over exact framing and returns the new client id. */
export async function registerRaw(c: RawClient, version: ProtocolVersion, name: string, key: Buffer = version === 3 ? v3Key() : v2Key()): Promise<Buffer> {
  c.write(encodeRequest(version, Buffer.alloc(16), Op.register, encodeRegisterPayload(version, name, key)))
  const r = await c.response()
  if (r.code !== (version === 1 ? 1000 : 2100)) throw new Error(`register ${name} got ${r.code}`)
  return r.payload
}

export function req(version: ProtocolVersion, id: Buffer, op: OpCode, payload?: Buffer): Buffer {
  return encodeRequest(version, id, op, payload)
}

/** A logger whose lines a test can inspect. */
export function captureLogger(level: 'debug' | 'info' | 'warn' = 'info'): {logger: Logger; lines: string[]} {
  const lines: string[] = []
  return {lines, logger: new Logger(level, 'relay', (l) => lines.push(l))}
}
