import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync} from 'node:fs'
import {open, unlink} from 'node:fs/promises'
import {type Server, createServer} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {performance} from 'node:perf_hooks'

import {type RelayAddress, RelayConnection} from './client.js'
import {type ContentBinding, encrypt, generateIdentityKeys, newSymKey} from './crypto.js'
import {CLIENT_ID_BYTES, MessageType, Op, RESPONSE_HEADER_BYTES, SEND_HEADER_BYTES, V2_HEADER_BYTES, encodeRegisterPayload, responseCode, writeResponseHeader} from './protocol.js'
import {RelayServer, SYNC_EVERY} from './server.js'
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
  /**
   * this process's CPU time (client and in-process relay, every thread) per text sent: unlike the
   * rate, barely moved by whatever else the machine runs; compare with baseline.roundtrip_cpu_us
   */
  send_cpu_us: number
  /** this process's peak resident memory (bench client and in-process relay) */
  peak_rss_mib: number
  baseline: {name: string; roundtrips_per_s: number; mib_per_s: number; roundtrip_cpu_us: number}
  /** the file's bytes written to a file on this machine as the relay writes them (1 MiB writes, datasync every 32 MiB, fsync at the end), no socket: the disk's ceiling for an upload */
  disk_mib_per_s: number
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
 * The baseline's peer, its "fair twin": it speaks just enough of the protocol to frame each send
 * (603) and answer it with a well-formed ack (2103: destination id, a message id), reading and
 * discarding the content, storing and checking nothing. The bench drives it with the very client
 * calls it makes to the relay (the same encryption per text, the same frames on the wire, the same
 * ack parsing, the same connections), so the two rates differ only by what the relay does:
 * parsing, checks, storage. (It used to be a bare frame echo with a 7-byte reply, while the relay's
 * side of the comparison also paid each text's encryption and its 27-byte ack.)
 */
export async function startBaselineTwin(): Promise<{port: number; stats: {requests: number; bytes: number}; close: () => Promise<void>}> {
  const stats = {bytes: 0, requests: 0}
  const HEAD = V2_HEADER_BYTES + SEND_HEADER_BYTES
  const srv: Server = createServer((s) => {
    s.setNoDelay(true)
    const head = Buffer.alloc(HEAD)
    let have = 0
    let skip = 0
    const answer = () => {
      const ack = Buffer.allocUnsafe(RESPONSE_HEADER_BYTES + CLIENT_ID_BYTES + 4)
      writeResponseHeader(ack, head[16], responseCode(3, Op.send), CLIENT_ID_BYTES + 4)
      head.copy(ack, RESPONSE_HEADER_BYTES, V2_HEADER_BYTES, V2_HEADER_BYTES + CLIENT_ID_BYTES)
      ack.writeUInt32LE(++stats.requests >>> 0, RESPONSE_HEADER_BYTES + CLIENT_ID_BYTES)
      s.write(ack)
    }
    s.on('data', (c: Buffer) => {
      stats.bytes += c.length
      let off = 0
      while (off < c.length) {
        if (skip > 0) {
          const k = Math.min(skip, c.length - off)
          skip -= k
          off += k
          if (skip === 0) answer()
          continue
        }
        const k = Math.min(HEAD - have, c.length - off)
        c.copy(head, have, off, off + k)
        have += k
        off += k
        if (have === HEAD) {
          have = 0
          skip = head.readUInt32LE(19) - SEND_HEADER_BYTES
          if (skip <= 0) answer()
        }
      }
    })
    s.on('error', () => {})
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()))
  return {
    close: () => new Promise<void>((r) => srv.close(() => r())),
    port: (srv.address() as {port: number}).port,
    stats,
  }
}

interface Sender {
  conn: RelayConnection
  id: Buffer
  binding: ContentBinding
  counter: bigint
}

/**
 * The timed text loop, the same for the relay and its twin: each sender encrypts its next text
 * (as a real client must) and sends it, waiting for the ack, until `messages` were sent in all.
 */
async function sendTexts(senders: Sender[], to: Buffer, sym: Buffer, plain: Buffer, messages: number, lat: number[], progress: (line: string) => void): Promise<{seconds: number; errors: number; cpuUsPerText: number}> {
  let next = 0
  let errors = 0
  const cpu = process.cpuUsage()
  const t = performance.now()
  await Promise.all(
    senders.map(async (snd) => {
      while (next < messages) {
        next++
        const sealed = encrypt('strong', sym, snd.binding, ++snd.counter, plain)
        const t0 = performance.now()
        try {
          await snd.conn.send(snd.id, Op.send, to, MessageType.text, sealed.length, sealed)
          lat.push(performance.now() - t0)
        } catch (error) {
          errors++
          progress(`send failed: ${(error as Error).message}`)
          // a connection the relay closed serves no further sends
          if (errors > 100) throw error
        }
      }
    }),
  )
  const seconds = (performance.now() - t) / 1000
  const used = process.cpuUsage(cpu)
  return {cpuUsPerText: (used.user + used.system) / messages, errors, seconds}
}

/** Warm-up before a timed run: JIT, and on the relay its SQLite statement cache. */
async function warmUp(senders: Sender[], to: Buffer): Promise<void> {
  for (const snd of senders) for (let i = 0; i < 50; i++) await snd.conn.send(snd.id, Op.send, to, MessageType.keyRequest, 0, Buffer.alloc(0))
}

/**
 * The baseline in the same run: the relay's own client loops against the fair twin (see
 * startBaselineTwin), with as many connections, as many texts (up to 20,000) and the same file.
 */
async function twinBaseline(opts: {connections: number; messages: number; fileBytes: number}, sym: Buffer, plain: Buffer, progress: (line: string) => void): Promise<{roundtripsPerS: number; mibPerS: number; cpuUsPerRoundtrip: number}> {
  const twin = await startBaselineTwin()
  const address = {host: '127.0.0.1', port: twin.port}
  const senders: Sender[] = []
  try {
    const to = randomBytes(CLIENT_ID_BYTES)
    for (let i = 0; i < opts.connections; i++) {
      const id = randomBytes(CLIENT_ID_BYTES)
      senders.push({binding: {recipient: to, sender: id, type: MessageType.text}, conn: await RelayConnection.connect(address, 3), counter: 0n, id})
    }
    await warmUp(senders, to)
    const n = Math.min(opts.messages, 20_000)
    // latencies kept as on the relay's side, so both loops do the same work
    const texts = await sendTexts(senders, to, sym, plain, n, [], progress)
    if (texts.errors > 0) throw new Error(`${texts.errors} baseline sends failed`)
    const t = performance.now()
    await senders[0].conn.send(senders[0].id, Op.send, to, MessageType.file, opts.fileBytes, generated(opts.fileBytes))
    const mibPerS = opts.fileBytes / MiB / ((performance.now() - t) / 1000)
    return {cpuUsPerRoundtrip: texts.cpuUsPerText, mibPerS, roundtripsPerS: n / texts.seconds}
  } finally {
    for (const s of senders) s.conn.close()
    await twin.close()
  }
}

/**
 * This machine's disk for the same bytes, without a socket: written to a new file in `dir` with the
 * relay's pattern (1 MiB writes, a datasync started every 32 MiB, fsync at the end) but one write at
 * a time, where the relay keeps reading its socket while up to 4 MiB of writes are in flight. Tells what
 * the disk does with the bytes alone at that moment: on a shared disk it swings by minutes.
 */
async function diskBaseline(dir: string, bytes: number): Promise<number> {
  const file = join(dir, `disk-${randomBytes(4).toString('hex')}.bin`)
  const fh = await open(file, 'wx', 0o600)
  try {
    const t = performance.now()
    let written = 0
    let syncing: Promise<void> = Promise.resolve()
    for await (const c of generated(bytes)) {
      await fh.write(c, 0, c.length)
      written += c.length
      // as the relay does (server.ts SYNC_EVERY): the write-back starts every 32 MiB, overlapping the writes
      if (written % SYNC_EVERY === 0) syncing = syncing.then(() => fh.datasync())
    }
    await syncing
    await fh.sync()
    return bytes / MiB / ((performance.now() - t) / 1000)
  } finally {
    await fh.close()
    await unlink(file).catch(() => {})
  }
}

/** Text messages/s through register/send/pull, and file MiB/s up and down, against a named baseline. */
export async function runRelayBench(opts: RelayBenchOptions, progress: (line: string) => void = () => {}): Promise<RelayBenchResult> {
  let dir: string | undefined
  let server: RelayServer | undefined
  let store: RelayStore | undefined
  let address = opts.address
  let diskDir: string | undefined
  try {
    if (!address) {
      dir = mkdtempSync(join(tmpdir(), 'mq-relay-bench-'))
      diskDir = dir
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

      const conns = Math.max(1, opts.connections ?? 1)
      const senders: Sender[] = [{binding, conn: a, counter: 0n, id: idA}]
      for (let i = 1; i < conns; i++) {
        const conn = await RelayConnection.connect(address, 3)
        const id = await conn.call(Buffer.alloc(16), Op.register, encodeRegisterPayload(3, `bench-a${i}-${tag}`, keyA), 'register')
        senders.push({binding: {recipient: idB, sender: id, type: MessageType.text}, conn, counter: 0n, id})
      }
      await warmUp(senders, idB)
      while ((await b.pull(idB, Op.pull, async () => {})) > 0);
      progress(`sending ${opts.messages} texts of ${opts.textBytes} bytes over ${conns} connection(s)`)
      let got = 0
      const lat: number[] = []
      const texts = await sendTexts(senders, idB, sym, plain, opts.messages, lat, progress)
      const sendS = texts.seconds
      const sendErrors = texts.errors
      lat.sort((x, y) => x - y)
      const q = (p: number) => (lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] * 1000) / 1000 : 0)
      for (const snd of senders.slice(1)) snd.conn.close()
      progress('pulling them')
      let t = performance.now()
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

      progress('baseline: the same client against a loopback twin that only frames and acks')
      const base = await twinBaseline({connections: conns, fileBytes, messages: opts.messages}, sym, plain, progress)
      progress('disk: the same file bytes written here with an fsync')
      diskDir ??= mkdtempSync(join(tmpdir(), 'mq-relay-bench-disk-'))
      const diskMiBPerS = await diskBaseline(diskDir, fileBytes)
      const sendRate = (opts.messages - sendErrors) / sendS
      return {
        baseline: {
          mib_per_s: round(base.mibPerS),
          name: "loopback TCP twin: the bench's own client and connections against a peer that frames each send and acks it, storing nothing",
          roundtrips_per_s: round(base.roundtripsPerS),
          roundtrip_cpu_us: round(base.cpuUsPerRoundtrip),
        },
        disk_mib_per_s: round(diskMiBPerS),
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
        send_cpu_us: round(texts.cpuUsPerText),
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
    if (diskDir && diskDir !== dir) rmSync(diskDir, {force: true, recursive: true})
  }
}
