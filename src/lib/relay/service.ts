import {type KeyObject, randomBytes} from 'node:crypto'
import {createReadStream, existsSync, readFileSync} from 'node:fs'
import {mkdir, open, rename, stat, unlink} from 'node:fs/promises'
import {basename, join, resolve} from 'node:path'

import type {MqHome} from '../config/home.js'
import {ConfigError, DataError, MqError, UsageError} from '../errors.js'
import {type Logger, silentLogger} from '../log.js'
import {type RelayAddress, RelayConnection} from './client.js'
import {
  COUNTER_BYTES,
  type ContentBinding,
  ContentDecryptor,
  ContentEncryptor,
  type Suite,
  decrypt,
  encrypt,
  generateIdentityKeys,
  newSymKey,
  openKeyMessage,
  parsePublicKey,
  protocolFor,
  readCounter,
  sealKeyMessage,
  sealedSize,
} from './crypto.js'
import {type CounterVerdict, RECENT, RelayCounters} from './counters.js'
import {type Peer, RelayKeyring, keyFingerprint} from './identity.js'
import {
  MESSAGE_TYPE_NAMES,
  MessageType,
  Op,
  decodePublicKeyPayload,
  decodeUserList,
  encodeRegisterPayload,
  validateName,
} from './protocol.js'

export const DEFAULT_RELAY_PORT = 1357

/** Parses host:port (or [v6]:port). */
export function parseAddress(text: string, source: string): RelayAddress {
  const m = /^\s*(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})\s*$/.exec(text)
  const port = m ? Number(m[3]) : 0
  if (!m || port < 1 || port > 65_535) {
    // a flag value is a usage error (2), like --broker; a config, env or server.info value is a config error (78)
    const E = source === '--relay' ? UsageError : ConfigError
    throw new E('E_RELAY_ADDRESS', `${source} holds ${JSON.stringify(text.trim())}, not HOST:PORT.`, {hint: 'Try this: --relay 127.0.0.1:1357'})
  }
  return {host: m[1] ?? m[2], port}
}

/** Client side: --relay flag, else MQ_RELAY / config client.relay, else ./server.info, else 127.0.0.1:1357. */
export function resolveRelayAddress(flag: string | undefined, configured: string | undefined, cwd = process.cwd()): {address: RelayAddress; source: string} {
  if (flag) return {address: parseAddress(flag, '--relay'), source: '--relay'}
  if (configured) return {address: parseAddress(configured, 'MQ_RELAY / client.relay'), source: 'client.relay'}
  const info = join(cwd, 'server.info')
  if (existsSync(info)) return {address: parseAddress(readFileSync(info, 'utf8').split(/\r?\n/)[0] ?? '', info), source: info}
  return {address: {host: '127.0.0.1', port: DEFAULT_RELAY_PORT}, source: 'default'}
}

/** Server side: --port, else config relay.port, else ./myport.info, else 1357 (with a warning from the caller). */
export function resolveRelayPort(flag: number | undefined, configured: number | undefined, cwd = process.cwd()): {port: number; source: string; warning?: string} {
  if (flag !== undefined) return {port: flag, source: '--port'}
  if (configured !== undefined) return {port: configured, source: 'relay.port'}
  const info = join(cwd, 'myport.info')
  if (existsSync(info)) {
    const text = readFileSync(info, 'utf8').trim()
    const n = Number(text)
    if (/^\d{1,5}$/.test(text) && n >= 1 && n <= 65_535) return {port: n, source: info}
    return {port: DEFAULT_RELAY_PORT, source: 'default', warning: `${info} holds ${JSON.stringify(text.slice(0, 40))}, not a port number; using ${DEFAULT_RELAY_PORT}`}
  }
  return {port: DEFAULT_RELAY_PORT, source: 'default', warning: `no --port, relay.port or ./myport.info; using the default port ${DEFAULT_RELAY_PORT}`}
}

export interface FetchedMessage {
  id: number
  from: string
  fromId: string
  type: string
  text?: string
  path?: string
  bytes?: number
  error?: string
}

/** Texts larger than this are refused by the fetching client rather than buffered. */
const MAX_TEXT_IN_MEMORY = 64 * 1024 * 1024

/**
 * The relay client behind `mq relay ...`: register, list, exchange keys, send and fetch, with
 * the identity and peer keys kept in RelayKeyring. One connection per client object.
 */
export class RelayClient {
  readonly keyring: RelayKeyring
  readonly counters: RelayCounters
  private conn?: RelayConnection

  constructor(
    home: MqHome,
    readonly address: RelayAddress,
    private readonly opts: {timeoutMs?: number; logger?: Logger; tls?: import('node:tls').ConnectionOptions; tlsIdentity?: string} = {},
  ) {
    this.keyring = new RelayKeyring(home)
    this.counters = new RelayCounters(home.relay)
  }

  private get log(): Logger {
    return this.opts.logger ?? silentLogger
  }

  private async connection(suite: Suite): Promise<RelayConnection> {
    this.conn ??= await RelayConnection.connect(this.address, protocolFor(suite), this.opts.timeoutMs, this.opts.tls)
    return this.conn
  }

  close(): void {
    this.conn?.close()
    this.conn = undefined
  }

  async register(name: string, suite: Suite, opts: {force?: boolean; bits?: number} = {}): Promise<{name: string; clientId: string; suite: Suite; protocol: number; fingerprint: string}> {
    const problem = validateName(name)
    if (problem) throw new UsageError('E_RELAY_NAME', `Invalid name ${JSON.stringify(name)}: ${problem}.`, {hint: 'Try this: use 1-254 printable ASCII characters.'})
    if (this.keyring.exists() && !opts.force) {
      const me = this.keyring.identity()
      throw new MqError('E_RELAY_ALREADY_REGISTERED', `This home is already registered as ${me.name} (${me.clientId.toString('hex')}).`, {
        hint: 'Try this: use another --home for another user, or --force to replace this identity.',
      })
    }
    const {privateKey, publicKeyDer} = generateIdentityKeys(suite, opts.bits)
    const version = protocolFor(suite)
    const conn = await this.connection(suite)
    let id: Buffer
    try {
      id = await conn.call(Buffer.alloc(16), Op.register, encodeRegisterPayload(version, name, publicKeyDer), 'register')
    } catch (error) {
      if (error instanceof MqError && error.code === 'E_RELAY_REFUSED') {
        throw new MqError('E_RELAY_NAME_TAKEN', `The relay refused to register ${JSON.stringify(name)}: the name is taken (or the key was refused).`, {hint: 'Try this: choose another name.'})
      }
      throw error
    }
    if (id.length !== 16) throw new MqError('E_RELAY_PROTOCOL', `The relay returned a ${id.length}-byte client id.`, {hint: 'Try this: check the relay.'})
    this.keyring.saveIdentity({clientId: id, name, privateKey, publicKeyDer, relay: `${this.address.host}:${this.address.port}`, suite, tls: this.opts.tls !== undefined, tlsIdentity: this.opts.tls === undefined ? undefined : this.opts.tlsIdentity})
    return {clientId: id.toString('hex'), fingerprint: keyFingerprint(publicKeyDer), name, protocol: version, suite}
  }

  async users(): Promise<{name: string; id: string}[]> {
    const me = this.keyring.identity()
    const conn = await this.connection(me.suite)
    const list = decodeUserList(await conn.call(me.clientId, Op.list, Buffer.alloc(0), 'list'))
    if ('error' in list) throw new MqError('E_RELAY_PROTOCOL', list.error, {hint: 'Try this: retry.'})
    return list.map((u) => ({id: u.clientId.toString('hex'), name: u.name}))
  }

  /** Resolves a user name to its id via the relay's list (and remembers it). */
  private async resolvePeer(name: string): Promise<Peer> {
    const known = this.keyring.peer(name)
    if (known) return known
    const u = (await this.users()).find((x) => x.name === name)
    if (!u) throw new MqError('E_RELAY_UNKNOWN_USER', `No user named ${JSON.stringify(name)} on the relay.`, {hint: 'Try this: mq relay users'})
    const p = {id: u.id, name}
    this.keyring.savePeer(p)
    return p
  }

  async key(name: string): Promise<{name: string; id: string; fingerprint: string; bytes: number}> {
    const me = this.keyring.identity()
    const peer = await this.resolvePeer(name)
    const publicKey = await this.fetchPublicKey(await this.connection(me.suite), me.clientId, name, peer.id)
    this.keyring.savePeer({id: peer.id, name, publicKey: publicKey.toString('base64')})
    return {bytes: publicKey.length, fingerprint: keyFingerprint(publicKey), id: peer.id, name}
  }

  private async fetchPublicKey(conn: RelayConnection, clientId: Buffer, name: string, id: string): Promise<Buffer> {
    const r = decodePublicKeyPayload(conn.version, await conn.call(clientId, Op.publicKey, Buffer.from(id, 'hex'), 'public key'))
    if ('error' in r) throw new MqError('E_RELAY_PROTOCOL', r.error, {hint: 'Try this: retry.'})
    try {
      parsePublicKey(r.publicKey)
    } catch {
      throw new DataError('E_RELAY_BAD_KEY', `${name}'s public key on the relay is not a valid RSA key.`, {hint: 'Try this: ask them to register again.'})
    }
    return r.publicKey
  }

  /** A sender's public key during a pull: the one kept for that peer, else fetched on a second connection. */
  private async senderPublicKey(me: {suite: Suite; clientId: Buffer}, from: string, fromId: string): Promise<KeyObject | undefined> {
    const known = this.keyring.peer(from)
    if (known?.id === fromId && known.publicKey) return parsePublicKey(Buffer.from(known.publicKey, 'base64'))
    const side = await RelayConnection.connect(this.address, protocolFor(me.suite), this.opts.timeoutMs, this.opts.tls)
    try {
      const der = await this.fetchPublicKey(side, me.clientId, from, fromId)
      if (from !== fromId) this.keyring.savePeer({id: fromId, name: from, publicKey: der.toString('base64')})
      return parsePublicKey(der)
    } catch (error) {
      this.log.debug('sender key not found', {error, from})
      return undefined
    } finally {
      side.close()
    }
  }

  async requestKey(name: string): Promise<{to: string; messageId: number}> {
    const me = this.keyring.identity()
    const peer = await this.resolvePeer(name)
    return {messageId: await this.sendRaw(me.suite, me.clientId, peer, MessageType.keyRequest, Buffer.alloc(0)), to: name}
  }

  /** Makes a fresh symmetric key, wraps it for `name` (fetching their public key if needed) and sends it. */
  async sendKey(name: string): Promise<{to: string; messageId: number}> {
    const me = this.keyring.identity()
    let peer = await this.resolvePeer(name)
    if (!peer.publicKey) {
      await this.key(name)
      peer = this.keyring.peer(name)!
    }
    const pub = parsePublicKey(Buffer.from(peer.publicKey!, 'base64'))
    const bits = pub.asymmetricKeyDetails?.modulusLength ?? 0
    if (me.suite === 'strong' && bits < 2048) {
      throw new MqError('E_RELAY_WEAK_PEER', `${name} uses a ${bits}-bit key (a MessageU client); the strong suite will not wrap keys with it.`, {
        hint: 'Try this: talk to MessageU clients from a home registered with --compat messageu.',
      })
    }
    const sym = newSymKey(me.suite)
    const content = sealKeyMessage(me.suite, me.privateKey, pub, sym, me.clientId, Buffer.from(peer.id, 'hex'), await this.nextCounter(me.suite, peer))
    const id = await this.sendRaw(me.suite, me.clientId, peer, MessageType.symmetricKey, content)
    this.keyring.savePeer({id: peer.id, name, symKey: sym.toString('base64')})
    return {messageId: id, to: name}
  }

  private symKeyFor(name: string, peer: Peer): Buffer {
    if (!peer.symKey) {
      throw new MqError('E_RELAY_NO_KEY', `No symmetric key shared with ${name} yet.`, {
        hint: `Try this: mq relay send-key ${name}   (or ask them: mq relay request-key ${name}, then mq relay fetch after they answer)`,
      })
    }
    return Buffer.from(peer.symKey, 'base64')
  }

  async sendText(name: string, text: string): Promise<{to: string; messageId: number; bytes: number}> {
    const me = this.keyring.identity()
    const peer = await this.resolvePeer(name)
    const key = this.symKeyFor(name, peer)
    const binding = {recipient: Buffer.from(peer.id, 'hex'), sender: me.clientId, type: MessageType.text}
    const sealed = encrypt(me.suite, key, binding, await this.nextCounter(me.suite, peer), Buffer.from(text, 'utf8'))
    return {bytes: sealed.length, messageId: await this.sendRaw(me.suite, me.clientId, peer, MessageType.text, sealed), to: name}
  }

  /** Streams a file: read, encrypted and sent chunk by chunk, never whole in memory. */
  async sendFile(name: string, path: string): Promise<{to: string; messageId: number; bytes: number; file: string}> {
    const me = this.keyring.identity()
    const peer = await this.resolvePeer(name)
    const key = this.symKeyFor(name, peer)
    const st = await stat(path).catch(() => undefined)
    if (!st?.isFile()) throw new UsageError('E_RELAY_NO_FILE', `${path} is not a readable file.`, {hint: 'Try this: check the path.'})
    // The strong suite carries the file's base name inside the ciphertext; MessageU carries none.
    const label = Buffer.from(basename(path), 'utf8').subarray(0, 255)
    const header = me.suite === 'strong' ? Buffer.concat([Buffer.from([label.length]), label]) : Buffer.alloc(0)
    const size = sealedSize(me.suite, header.length + st.size)
    if (size > 0xffff_ffff) throw new UsageError('E_RELAY_TOO_BIG', `${path} is too big for the relay protocol (4 GiB at most).`, {hint: 'Try this: split the file.'})
    const binding = {recipient: Buffer.from(peer.id, 'hex'), sender: me.clientId, type: MessageType.file}
    const enc = new ContentEncryptor(me.suite, key, binding, await this.nextCounter(me.suite, peer))
    async function* sealed(): AsyncGenerator<Buffer> {
      yield enc.start()
      yield enc.update(header)
      for await (const chunk of createReadStream(path, {highWaterMark: 256 * 1024})) yield enc.update(chunk as Buffer)
      yield enc.final()
    }
    const id = await this.sendRaw(me.suite, me.clientId, peer, MessageType.file, sealed(), size)
    return {bytes: st.size, file: path, messageId: id, to: name}
  }

  /** The strong suite's per-peer counter for the next message (MessageU's formats carry none). */
  private async nextCounter(suite: Suite, peer: Peer): Promise<bigint> {
    return suite === 'strong' ? this.counters.next(peer.id) : 0n
  }

  /** Records an authenticated counter; a counter seen before is a replay, refused (thrown) here. */
  private async acceptCounter(from: string, fromId: string, counter: bigint): Promise<void> {
    refuseReplay(from, counter, await this.counters.accept(fromId, counter))
  }

  private async sendRaw(suite: Suite, clientId: Buffer, peer: Peer, type: number, content: Buffer | AsyncIterable<Buffer>, size?: number): Promise<number> {
    const conn = await this.connection(suite)
    const n = Buffer.isBuffer(content) ? content.length : size!
    const ack = await conn.send(clientId, Op.send, Buffer.from(peer.id, 'hex'), type, n, content)
    if (ack.length !== 20) throw new MqError('E_RELAY_PROTOCOL', `The relay's send acknowledgement is ${ack.length} bytes, expected 20.`, {hint: 'Try this: check the relay.'})
    return ack.readUInt32LE(16)
  }

  /**
   * Pulls every waiting message: key requests and keys are handled, texts decrypted, files
   * decrypted as they stream into `outDir` (kept only when they authenticate).
   */
  async fetch(outDir: string, onMessage: (m: FetchedMessage) => void): Promise<FetchedMessage[]> {
    const me = this.keyring.identity()
    const conn = await this.connection(me.suite)
    const names = new Map<string, string>()
    for (const u of await this.users()) names.set(u.id, u.name)
    const out: FetchedMessage[] = []
    await conn.pull(me.clientId, Op.pull, async (e, body) => {
      const fromId = e.sender.toString('hex')
      const from = names.get(fromId) ?? this.keyring.peerById(e.sender)?.name ?? fromId
      const m: FetchedMessage = {from, fromId, id: e.messageId, type: MESSAGE_TYPE_NAMES[e.type] ?? `unknown(${e.type})`}
      if (names.has(fromId) && !this.keyring.peer(from)) this.keyring.savePeer({id: fromId, name: from})
      const peer = this.keyring.peer(from)
      const binding: ContentBinding = {recipient: me.clientId, sender: e.sender, type: e.type}
      // Connection errors propagate; anything about one message's content is reported on it.
      let payload: Buffer | undefined
      if (e.type === MessageType.symmetricKey || e.type === MessageType.text) {
        if (e.size > MAX_TEXT_IN_MEMORY) m.error = `message of ${e.size} bytes is too big to hold in memory`
        else payload = await body.read(e.size)
      }
      try {
        switch (e.type) {
          case MessageType.keyRequest:
            m.text = 'Request for symmetric key'
            break
          case MessageType.symmetricKey: {
            if (!payload) break
            const senderKey = me.suite === 'strong' ? await this.senderPublicKey(me, from, fromId) : undefined
            const {counter, key: sym} = openKeyMessage(me.suite, me.privateKey, senderKey, payload, e.sender, me.clientId)
            // a key delivered again would put back a key the sender has since replaced
            if (counter !== undefined) await this.acceptCounter(from, fromId, counter)
            this.keyring.savePeer({id: fromId, name: from, symKey: sym.toString('base64')})
            m.text = 'symmetric key received'
            break
          }
          case MessageType.text: {
            if (!payload) break
            if (!peer?.symKey) throw new Error('no symmetric key for this sender')
            const plain = decrypt(me.suite, Buffer.from(peer.symKey, 'base64'), binding, payload)
            if (me.suite === 'strong') await this.acceptCounter(from, fromId, readCounter(payload))
            m.text = plain.toString('utf8')
            break
          }
          case MessageType.file: {
            const r = await this.receiveFile(me.suite, peer, e, binding, outDir, from, body)
            if ('error' in r) throw r.error
            m.path = r.path
            m.bytes = r.bytes
            break
          }
          default:
            throw new Error(`unknown message type ${e.type}`)
        }
      } catch (error) {
        if (error instanceof ReplayRefused) {
          m.error = error.message
          this.log.warn('replayed message refused', {counter: error.counter.toString(), from, id: e.messageId, verdict: error.verdict})
        } else {
          m.error = `can't decrypt message: ${(error as Error).message}`
          this.log.debug('message not decrypted', {error, id: e.messageId})
        }
      }
      out.push(m)
      onMessage(m)
    })
    return out
  }

  private async receiveFile(
    suite: Suite,
    peer: Peer | undefined,
    e: {messageId: number; size: number},
    binding: ContentBinding,
    outDir: string,
    from: string,
    body: {read: (n: number) => Promise<Buffer>; stream: (sink: (c: Buffer) => void | Promise<void>) => Promise<void>},
  ): Promise<{path: string; bytes: number} | {error: Error}> {
    const fromId = binding.sender.toString('hex')
    // The counter comes first: a file delivered again is refused before anything is written.
    let head: Buffer = Buffer.alloc(0)
    if (suite === 'strong' && peer?.symKey && e.size >= COUNTER_BYTES) {
      head = await body.read(COUNTER_BYTES)
      const counter = readCounter(head)
      const v = this.counters.check(fromId, counter)
      if (v !== 'new') return {error: new ReplayRefused(from, counter, v)}
    }
    await mkdir(outDir, {recursive: true})
    const tmp = join(outDir, `.mq-relay-${randomBytes(6).toString('hex')}.part`)
    const fh = await open(tmp, 'wx', 0o600)
    let failure: Error | undefined
    let bytes = 0
    // Strong-suite files start with a 1-byte length and the sender's file name.
    let label: Buffer | undefined = suite === 'strong' ? Buffer.alloc(0) : undefined
    let labelLen = -1
    let dec: ContentDecryptor | undefined
    try {
      if (peer?.symKey) dec = new ContentDecryptor(suite, Buffer.from(peer.symKey, 'base64'), binding, e.size)
      else failure = new Error('no symmetric key for this sender')
    } catch (error) {
      failure = error as Error
    }
    const emit = async (plain: Buffer) => {
      let p = plain
      if (label !== undefined && (labelLen < 0 || label.length < labelLen)) {
        if (labelLen < 0 && p.length > 0) {
          labelLen = p[0]
          p = p.subarray(1)
        }
        const k = Math.max(0, Math.min(labelLen - label.length, p.length))
        label = Buffer.concat([label, p.subarray(0, k)])
        p = p.subarray(k)
      }
      if (p.length > 0) {
        await fh.write(p)
        bytes += p.length
      }
    }
    if (head.length > 0 && !failure) await emit(dec!.update(head))
    try {
      await body.stream(async (chunk) => {
        if (failure) return // drain the rest of this entry
        try {
          await emit(dec!.update(chunk))
        } catch (error) {
          failure = error as Error
        }
      })
    } catch (error) {
      await fh.close().catch(() => {})
      await unlink(tmp).catch(() => {})
      throw error
    }
    if (!failure) {
      try {
        await emit(dec!.final())
      } catch (error) {
        failure = error as Error
      }
    }
    await fh.close()
    // authenticated now: record the counter (a concurrent fetch may have taken it meanwhile)
    if (!failure && head.length > 0) {
      const counter = readCounter(head)
      const v = await this.counters.accept(fromId, counter)
      if (v !== 'new') failure = new ReplayRefused(from, counter, v)
    }
    if (failure) {
      await unlink(tmp).catch(() => {})
      return {error: failure}
    }
    const wanted = label && label.length > 0 ? safeName(label.toString('utf8')) : `from-${safeName(from)}-${e.messageId}.bin`
    const path = uniquePath(resolve(outDir), wanted)
    await rename(tmp, path)
    return {bytes, path}
  }
}

/** A strong-suite message whose counter this home already accepted from that sender. */
class ReplayRefused extends Error {
  constructor(
    readonly from: string,
    readonly counter: bigint,
    readonly verdict: CounterVerdict,
  ) {
    super(
      verdict === 'replay'
        ? `replayed message refused: ${from}'s message ${counter} was already received; the relay delivered it again`
        : `replayed message refused: ${from}'s message ${counter} is older than the last ${RECENT} received from them (a stored message delivered again)`,
    )
  }
}

function refuseReplay(from: string, counter: bigint, v: CounterVerdict): void {
  if (v !== 'new') throw new ReplayRefused(from, counter, v)
}

function safeName(name: string): string {
  const base = basename(name.replace(/\\/g, '/')).replace(/[^\w.\- ]/g, '_').replace(/^\.+/, '_')
  return base.length > 0 ? base.slice(0, 200) : 'file.bin'
}

function uniquePath(dir: string, name: string): string {
  let p = join(dir, name)
  for (let i = 1; existsSync(p); i++) {
    const dot = name.lastIndexOf('.')
    p = join(dir, dot > 0 ? `${name.slice(0, dot)}-${i}${name.slice(dot)}` : `${name}-${i}`)
  }
  return p
}
