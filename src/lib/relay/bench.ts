import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync} from 'node:fs'
import {type Server, createServer} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {performance} from 'node:perf_hooks'

import {type RelayAddress, RelayConnection} from './client.js'
import {type ContentBinding, encrypt, generateIdentityKeys, newSymKey} from './crypto.js'
import {MessageType, Op, RESPONSE_HEADER_BYTES, encodeRegisterPayload} from './protocol.js'
import {SocketReader, writeFlow} from './reader.js'
import {RelayServer} from './server.js'
import {RelayStore} from './store.js'

export interface RelayBenchOptions {
  /** an existing relay; else one runs in-process on a temporary SQLite home */
  address?: RelayAddress
  messages: number
  /** parallel sender connections for the texts (each its own user) */
  connections?: number
  textBytes: number
  fileMiB: number
  storeUrl?: string
  /** port of the in-process relay; 0 = a free one */
  port?: number
}

export interface RelayBenchResult {
  relay: string
  store: string
  messages: number
  connections: number
  text_bytes: number
  send_msgs_per_s: number
  pull_msgs_per_s: number
  end_to_end_msgs_per_s: number
  file_mib: number
  file_upload_mib_per_s: number
  file_download_mib_per_s: number
  /** per text send (one request, its acknowledgement) */
  send_p50_ms: number
  send_p99_ms: number
  /** sends that failed; no ratio is given for the texts when there were any */
  send_errors: number
  /** this process's peak resident memory (bench client and in-process relay) */
  peak_rss_mib: number
  baseline: {name: string; roundtrips_per_s: number; mib_per_s: number}
  ratios: {send_vs_roundtrip: number | null; upload_vs_tcp: number; download_vs_tcp: number}
  /** issue 17's targets for the two ratios */
  targets: {send_vs_roundtrip: number; upload_vs_tcp: number}
}

const MiB = 1024 * 1024
const round = (n: number) => Math.round(n * 10) / 10

/** Repeats one random MiB block (with a counter) so big payloads never sit in memory. */
async function* generated(total: number): AsyncGenerator<Buffer> {
  const block = randomBytes(MiB)
  for (let off = 0, i = 0; off < total; off += MiB, i++) {
    block.writeUInt32LE(i, 0)
    yield Buffer.from(block.subarray(0, Math.min(MiB, total - off)))
  }
}

/**
 * Baseline in the same run: a plain loopback TCP peer that answers each request frame with a
 * 7-byte reply (round trips/s) and swallows a bulk stream (MiB/s): what the relay's numbers
 * would be if storage and parsing cost nothing.
 */
async function tcpBaseline(frameBytes: number, roundtrips: number, bulkBytes: number): Promise<{roundtripsPerS: number; mibPerS: number}> {
  const srv: Server = createServer((s) => {
    let pending = 0
    let bulk = false
    s.on('data', (c: Buffer) => {
      if (bulk || c[0] === 0xbb) {
        bulk = true
        return
      }
      pending += c.length
      while (pending >= frameBytes) {
        pending -= frameBytes
        s.write(Buffer.alloc(RESPONSE_HEADER_BYTES))
      }
    })
    s.on('end', () => s.end('k'))
    s.on('error', () => {})
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()))
  const port = (srv.address() as {port: number}).port
  const {connect} = await import('node:net')
  const open = () =>
    new Promise<import('node:net').Socket>((resolve) => {
      const s = connect({host: '127.0.0.1', port}, () => resolve(s))
      s.setNoDelay(true)
    })
  try {
    const a = await open()
    const ra = new SocketReader(a, 10_000)
    const frame = Buffer.alloc(frameBytes, 1)
    let t = performance.now()
    for (let i = 0; i < roundtrips; i++) {
      await writeFlow(a, frame)
      await ra.read(RESPONSE_HEADER_BYTES)
    }
    const roundtripsPerS = roundtrips / ((performance.now() - t) / 1000)
    a.destroy()
    const b = await open()
    const rb = new SocketReader(b, 10_000)
    t = performance.now()
    await writeFlow(b, Buffer.from([0xbb]))
    for await (const c of generated(bulkBytes)) await writeFlow(b, c)
    b.end()
    await rb.read(1)
    const mibPerS = bulkBytes / MiB / ((performance.now() - t) / 1000)
    b.destroy()
    return {mibPerS, roundtripsPerS}
  } finally {
    srv.close()
  }
}

/** Text messages/s through register/send/pull, and file MiB/s up and down, against a named baseline. */
export async function runRelayBench(opts: RelayBenchOptions, progress: (line: string) => void = () => {}): Promise<RelayBenchResult> {
  let dir: string | undefined
  let server: RelayServer | undefined
  let store: RelayStore | undefined
  let address = opts.address
  try {
    if (!address) {
      dir = mkdtempSync(join(tmpdir(), 'mq-relay-bench-'))
      store = await RelayStore.open({dataDir: join(dir, 'data'), url: opts.storeUrl ?? 'sqlite'})
      server = new RelayServer({
        filesDir: join(dir, 'data', 'relay-files'),
        host: '127.0.0.1',
        idleTimeoutMs: 60_000,
        maxFileBytes: Math.max(opts.fileMiB * MiB + 1024, MiB),
        maxTextBytes: 16 * MiB,
        port: opts.port ?? 0,
        store,
      })
      await server.start()
      address = {host: '127.0.0.1', port: server.port}
    }
    const tag = randomBytes(3).toString('hex')
    const a = await RelayConnection.connect(address, 3)
    const b = await RelayConnection.connect(address, 3)
    try {
      const keyA = generateIdentityKeys('strong').publicKeyDer
      const keyB = generateIdentityKeys('strong').publicKeyDer
      const idA = await a.call(Buffer.alloc(16), Op.register, encodeRegisterPayload(3, `bench-a-${tag}`, keyA), 'register')
      const idB = await b.call(Buffer.alloc(16), Op.register, encodeRegisterPayload(3, `bench-b-${tag}`, keyB), 'register')
      const sym = newSymKey('strong')
      const binding: ContentBinding = {recipient: idB, sender: idA, type: MessageType.text}
      const plain = Buffer.alloc(opts.textBytes, 0x61)

      // warm-up: JIT, SQLite statement cache
      for (let i = 0; i < 50; i++) await a.send(idA, Op.send, idB, MessageType.keyRequest, 0, Buffer.alloc(0))
      await b.pull(idB, Op.pull, async () => {})
      const conns = Math.max(1, opts.connections ?? 1)
      const senders: {conn: RelayConnection; id: Buffer; binding: ContentBinding; counter: bigint}[] = [{binding, conn: a, counter: 0n, id: idA}]
      for (let i = 1; i < conns; i++) {
        const conn = await RelayConnection.connect(address, 3)
        const id = await conn.call(Buffer.alloc(16), Op.register, encodeRegisterPayload(3, `bench-a${i}-${tag}`, keyA), 'register')
        senders.push({binding: {recipient: idB, sender: id, type: MessageType.text}, conn, counter: 0n, id})
      }
      progress(`sending ${opts.messages} texts of ${opts.textBytes} bytes over ${conns} connection(s)`)
      let got = 0
      let t = performance.now()
      let next = 0
      let sendErrors = 0
      const lat: number[] = []
      await Promise.all(
        senders.map(async (snd) => {
          while (next < opts.messages) {
            next++
            const sealed = encrypt('strong', sym, snd.binding, ++snd.counter, plain)
            const t0 = performance.now()
            try {
              await snd.conn.send(snd.id, Op.send, idB, MessageType.text, sealed.length, sealed)
              lat.push(performance.now() - t0)
            } catch (error) {
              sendErrors++
              progress(`send failed: ${(error as Error).message}`)
              // a connection the relay closed serves no further sends
              if (sendErrors > 100) throw error
            }
          }
        }),
      )
      lat.sort((x, y) => x - y)
      const q = (p: number) => (lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] * 1000) / 1000 : 0)
      for (const snd of senders.slice(1)) snd.conn.close()
      const sendS = (performance.now() - t) / 1000
      progress('pulling them')
      t = performance.now()
      while (got < opts.messages - sendErrors) {
        const n = await b.pull(idB, Op.pull, async () => {})
        if (n === 0) break
        got += n
      }
      const pullS = (performance.now() - t) / 1000

      progress(`sending a ${opts.fileMiB} MiB file`)
      const fileBytes = opts.fileMiB * MiB
      t = performance.now()
      await a.send(idA, Op.send, idB, MessageType.file, fileBytes, generated(fileBytes))
      const upS = (performance.now() - t) / 1000
      t = performance.now()
      let down = 0
      await b.pull(idB, Op.pull, async (_e, body) => {
        await body.stream((c) => {
          down += c.length
        })
      })
      const downS = (performance.now() - t) / 1000
      if (down !== fileBytes) throw new Error(`pulled ${down} file bytes, sent ${fileBytes}`)

      progress('baseline: plain loopback TCP')
      const frameBytes = 23 + 21 + 8 + 12 + opts.textBytes + 16
      const base = await tcpBaseline(frameBytes, Math.min(opts.messages, 5000), fileBytes)
      const sendRate = (opts.messages - sendErrors) / sendS
      return {
        baseline: {mib_per_s: round(base.mibPerS), name: 'loopback TCP: request/7-byte-reply round trips and a bulk stream into a discarding peer', roundtrips_per_s: round(base.roundtripsPerS)},
        end_to_end_msgs_per_s: round(opts.messages / (sendS + pullS)),
        file_download_mib_per_s: round(opts.fileMiB / downS),
        file_mib: opts.fileMiB,
        file_upload_mib_per_s: round(opts.fileMiB / upS),
        connections: Math.max(1, opts.connections ?? 1),
        messages: opts.messages,
        pull_msgs_per_s: round(got / pullS),
        ratios: {
          download_vs_tcp: Math.round((opts.fileMiB / downS / base.mibPerS) * 1000) / 1000,
          send_vs_roundtrip: sendErrors === 0 ? Math.round((sendRate / base.roundtripsPerS) * 1000) / 1000 : null,
          upload_vs_tcp: Math.round((opts.fileMiB / upS / base.mibPerS) * 1000) / 1000,
        },
        relay: `${address.host}:${address.port}`,
        peak_rss_mib: Math.round(process.resourceUsage().maxRSS / 1024),
        send_errors: sendErrors,
        send_msgs_per_s: round(sendRate),
        send_p50_ms: q(0.5),
        send_p99_ms: q(0.99),
        store: store?.label.replace(/:.*$/, '') ?? 'remote',
        targets: {send_vs_roundtrip: 0.5, upload_vs_tcp: 0.6},
        text_bytes: opts.textBytes,
      }
    } finally {
      a.close()
      b.close()
    }
  } finally {
    await server?.stop()
    await store?.close()
    if (dir) rmSync(dir, {force: true, recursive: true})
  }
}
