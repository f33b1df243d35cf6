/**
 * One fuzz harness per parser that reads bytes from outside. A harness runs one input and returns a
 * short outcome signature (new signatures grow the corpus); it throws FuzzBug when the parser fails
 * in a way its contract forbids: anything but its typed error (a TypeError, RangeError, a stack
 * overflow, an error-level log from a server, a reply that breaks the protocol).
 */
import {existsSync, mkdtempSync, readFileSync, readdirSync, rmSync} from 'node:fs'
import {type KeyObject, X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync} from 'node:crypto'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {Duplex} from 'node:stream'

import {CipherMqListener} from '../../src/lib/broker/ciphermq.js'
import {EnvelopeOpener, EnvelopeSealer, type GrantStore, parseGrant3} from '../../src/lib/crypto/envelope.js'
import {ALLOW_ALL, Engine} from '../../src/lib/broker/engine.js'
import {BATCH_MAX_COUNT, DeliveryBatchWriter, FrameError, FrameParser, PublishBatchWriter, encodeFrame, encodeHeaderArgs, frameHeadersOrNone, isHeaderName, parseDeliveries, parsePublishBatch} from '../../src/lib/wire/protocol.js'
import {parseYamlSource, resolveSources} from '../../src/lib/config/load.js'
import {MqHome} from '../../src/lib/config/home.js'
import {defaultConfig} from '../../src/lib/config/load.js'
import {MqError} from '../../src/lib/errors.js'
import {Logger} from '../../src/lib/log.js'
import {CertificateAuthority} from '../../src/lib/pki/index.js'
import {verifyIdentityCerts} from '../../src/lib/pki/identity.js'
import {crlSerials} from '../../src/lib/pki/tls.js'
import {validateIngest} from '../../src/lib/proxy/validate.js'
import {encrypt, generateIdentityKeys, newSymKey, parsePublicKey, sealKeyMessage} from '../../src/lib/relay/crypto.js'
import {MessageType, Op, type ProtocolVersion, encodeRegisterPayload, encodeRequest, encodeSendHeader, padFrame} from '../../src/lib/relay/protocol.js'
import {RelayServer} from '../../src/lib/relay/server.js'
import {RelayStore} from '../../src/lib/relay/store.js'

/** The parser broke its contract on this input. */
export class FuzzBug extends Error {
  constructor(
    message: string,
    readonly original?: unknown,
  ) {
    super(message)
  }
}

export interface Harness<C = unknown> {
  name: string
  what: string
  maxLen: number
  dict: string[]
  setup(): Promise<C>
  seeds(ctx: C): Buffer[]
  run(input: Buffer, ctx: C): string | Promise<string>
  teardown?(ctx: C): Promise<void>
}

const describe = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}`.slice(0, 300) + (e.stack ? `\n${e.stack.split('\n').slice(1, 6).join('\n')}` : '') : String(e))

/** Runs fn; a typed error is an outcome, anything else is a bug. */
function typed(fn: () => unknown, ok: (e: unknown) => string | undefined): string {
  try {
    fn()
    return 'ok'
  } catch (error) {
    const code = ok(error)
    if (code === undefined) throw new FuzzBug(describe(error), error)
    return code
  }
}

const NATIVE = [TypeError, RangeError, ReferenceError, EvalError, URIError]

const mqCode = (e: unknown) => (e instanceof MqError ? e.code : undefined)

/** Cuts an input into 1-3 chunks at points taken from its own bytes, so chunk boundaries get fuzzed too. */
function chunks(input: Buffer): Buffer[] {
  if (input.length < 4) return [input]
  const a = input[0] % 3
  if (a === 0) return [input]
  const i = 1 + ((input[1] * 131 + input[2]) % (input.length - 1))
  if (a === 1) return [input.subarray(0, i), input.subarray(i)]
  const j = i + ((input[3] * 7) % (input.length - i))
  return [input.subarray(0, i), input.subarray(i, j), input.subarray(j)]
}

const seedsDir = (name: string) => new URL(`../../../test/fuzz/corpus/${name}/`, import.meta.url)

/** Files kept in test/fuzz/corpus/<name>/ (hand-made seeds and past findings), read from the source tree. */
export function corpusFiles(name: string): Buffer[] {
  const dir = seedsDir(name)
  if (!existsSync(dir)) return []
  return readdirSync(dir)
    .sort()
    .map((f) => readFileSync(new URL(f, dir)))
}

// --- broker frames: the native protocol's frame parser, PUBLISH_BATCH and DELIVERS bodies -----------

const brokerFrames: Harness<null> = {
  async setup() {
    return null
  },
  dict: ['PUBLISH ', 'PUBLISH_BATCH ', 'DELIVERS ', 'DELIVER ', 'HELLO ', 'CONSUME ', 'ACK ', ' count=', ' exchange=', ' key=', ' message_id=', ' h.', ' h.x-mq-format=native', ' batch_headers=1', ' id=', '%', '%2', '%zz', '\n', '\r\n', ' ', '=', ' 4096', ' 65536', ' 0'],
  maxLen: 70_000,
  name: 'broker-frames',
  run(input) {
    const sig: string[] = []
    const parser = new FrameParser(64 * 1024)
    const onFrame = (f: {verb: string; id: number; args: Record<string, string>; body: Buffer}) => {
      sig.push(f.verb)
      if (f.verb === 'PUBLISH_BATCH' || f.verb === 'DELIVERS') {
        // a batch's h.* are every record's headers: taken once from the line, names checked as the engine does
        const h = frameHeadersOrNone(f.args)
        for (const k in h) if (!isHeaderName(k)) sig.push('E_BAD_HEADER')
      }
      if (f.verb === 'PUBLISH_BATCH') {
        // as the server does: count checked first (server.ts), then the body
        const v = f.args.count
        const count = v !== undefined && /^\d{1,15}$/.test(v) ? Number(v) : 0
        if (count >= 1 && count <= BATCH_MAX_COUNT) sig.push(typed(() => parsePublishBatch(f.body, count, f.id), (e) => (e instanceof FrameError ? e.code : undefined)))
      } else if (f.verb === 'DELIVERS') {
        // as the client does (client.ts): count as given
        sig.push(typed(() => parseDeliveries(f.body, Number(f.args.count ?? 0), () => {}), (e) => (e instanceof FrameError ? e.code : undefined)))
      }
    }
    try {
      for (const c of chunks(input)) parser.push(c, onFrame, (e) => sig.push(e.code))
    } catch (error) {
      if (!(error instanceof FrameError) || !error.fatal) throw new FuzzBug(describe(error), error)
      sig.push(`fatal:${error.code}`)
    }
    return sig.slice(0, 6).join(',')
  },
  seeds() {
    const pb = new PublishBatchWriter()
    pb.start('ex', 'rk')
    pb.add('id-1', Buffer.from('hello'))
    pb.add(undefined, Buffer.alloc(300, 1))
    const headers = encodeHeaderArgs({'trace.id': 'a b=c%d é', 'x-mq-format': 'native'})
    const pbh = new PublishBatchWriter()
    pbh.start('', 'q1', headers)
    pbh.add('id-2', Buffer.from('with headers'))
    pbh.add('id-3', Buffer.from('and again'))
    const dbh = new DeliveryBatchWriter()
    dbh.start('c2', headers)
    dbh.add(3, false, 1, Date.now(), '', 'q1', 'id-2', Buffer.from('with headers'))
    const db = new DeliveryBatchWriter()
    db.start('c1')
    db.add(1, false, 1, Date.now(), 'ex', 'rk', 'm1', Buffer.from('body'))
    db.add(2, true, 3, Date.now(), 'ex', 'rk', 'm2', Buffer.from('{"a":1}'))
    return [
      encodeFrame('HELLO', 1, {identity: 'fuzz', version: 1}),
      encodeFrame('PUBLISH', 2, {'exchange': '', 'h.x-trace': 'a b', 'key': 'q1', 'message_id': 'm%1'}, Buffer.from('payload')),
      encodeFrame('DECLARE_QUEUE', 3, {dead_letter: 'dlq', durable: true, name: 'q1', ttl: 1000}),
      Buffer.concat([encodeFrame('ACK', 0, {tags: '1-40,42'}), encodeFrame('PING', 9)]),
      pb.frame(1),
      db.frame(),
      pbh.frame(4),
      dbh.frame(),
    ]
  },
  what: 'FrameParser.push over 1-3 chunks; PUBLISH_BATCH bodies (parsePublishBatch) and DELIVERS bodies (parseDeliveries), with and without shared h.* headers',
}

// --- CipherMQ text protocol ------------------------------------------------------------------------

class FakeSocket extends Duplex {
  out = 0
  replies: string[] = []
  remoteAddress = '127.0.0.1'
  remotePort = 40000
  override _read(): void {}
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.out += chunk.length
    // the harnesses read only the start of a reply: a pull's megabytes need not be kept
    if (this.replies.length < 64) this.replies.push(typeof chunk === 'string' ? chunk.slice(0, 256) : chunk.subarray(0, 256).toString('latin1'))
    cb()
  }
  setNoDelay(): this {
    return this
  }
  setKeepAlive(): this {
    return this
  }
  setTimeout(): this {
    return this
  }
}

interface CipherCtx {
  engine: Engine
  listener: CipherMqListener
  bugs: string[]
  inputs: number
}

const ciphermq: Harness<CipherCtx> = {
  async setup() {
    const bugs: string[] = []
    const engine = new Engine()
    const listener = new CipherMqListener({engine, logger: new Logger('error', '', (l) => bugs.push(l)), maxConnections: 1 << 30, maxLine: 4096, perms: ALLOW_ALL})
    // every thrown error becomes an "Error: ..." reply; the harness wants to see which kind it was
    const l = listener as unknown as {command: (...a: unknown[]) => void}
    const orig = l.command.bind(listener)
    l.command = (...a: unknown[]) => {
      try {
        orig(...a)
      } catch (error) {
        // the listener reports usage mistakes as plain Errors ("usage: ..."); a TypeError or RangeError is a bug
        if (!(error instanceof Error) || NATIVE.some((c) => error instanceof c)) bugs.push(describe(error))
        throw error
      }
    }
    return {bugs, engine, inputs: 0, listener}
  },
  dict: ['declare_queue ', 'declare_exchange ', 'bind ', 'publish ', 'publish_batch ', 'consume ', 'fetch ', 'ack ', 'stats', '\n', ' ', '{"message_id":"m1","ciphertext":"AA=="}', '[{"message_id":"x"}]', '{}', '[]', '"', 'null', '\r\n', 'default_exchange', 'default_queue'],
  maxLen: 8192,
  name: 'ciphermq',
  run(input, ctx) {
    // a fresh engine now and then keeps memory bounded (queues and messages the inputs created)
    if (++ctx.inputs % 2000 === 0) {
      ctx.engine.stop()
      ctx.engine = new Engine()
      ;(ctx.listener as unknown as {opts: {engine: Engine}}).opts.engine = ctx.engine
    }
    const sock = new FakeSocket()
    ;(ctx.listener as unknown as {accept: (s: unknown) => void}).accept(sock)
    for (const c of chunks(input)) sock.emit('data', c.toString('utf8'))
    sock.emit('close')
    if (ctx.bugs.length > 0) {
      const b = ctx.bugs.splice(0)
      throw new FuzzBug(b.join('\n'))
    }
    const first = sock.replies[0] ?? ''
    return first.slice(0, first.indexOf(' ') + 1 || 12)
  },
  seeds() {
    return [
      'declare_queue q1\ndeclare_exchange ex\nbind q1 ex rk\npublish ex rk {"message_id":"m1","ciphertext":"AA=="}\nfetch q1\nack m1\n',
      'publish_batch ex rk [{"message_id":"a"},{"message_id":"b"}]\nstats\n',
      'consume default_queue\npublish default_exchange default_key {"message_id":"x","data":"y"}\nack x\n',
      'declare_queue\nbind\nack\nfetch nope\n',
    ].map((s) => Buffer.from(s))
  },
  async teardown(ctx) {
    ctx.engine.stop()
  },
  what: 'CipherMqListener: line splitting and every command, over an in-process socket and a real Engine',
}

// --- relay requests, v1/v2/v3, exact and 1024-padded framing -----------------------------------------

/** Users the seeds act as, registered at setup with fixed ids so sends and pulls get past the id check. */
const RELAY_USERS = {
  v2a: Buffer.alloc(16, 0x21),
  v2b: Buffer.alloc(16, 0x22),
  v3a: Buffer.alloc(16, 0x31),
  v3b: Buffer.alloc(16, 0x32),
}

interface RelayCtx {
  dir: string
  store: RelayStore
  server: RelayServer
  bugs: string[]
  inputs: number
  keys: {v2: Buffer; v3a: KeyObject; v3b: KeyObject; v3bPub: KeyObject; v3der: Buffer}
}

const relay: Harness<RelayCtx> = {
  async setup() {
    const dir = mkdtempSync(join(tmpdir(), 'mq-fuzz-relay-'))
    const store = await RelayStore.open({dataDir: join(dir, 'data'), url: 'sqlite'})
    const bugs: string[] = []
    const server = new RelayServer({
      filesDir: join(dir, 'data', 'relay-files'),
      host: '127.0.0.1',
      idleTimeoutMs: 500,
      logger: new Logger('error', '', (l) => bugs.push(l)),
      maxFileBytes: 1 << 20,
      maxTextBytes: 64 * 1024,
      paddingGraceMs: 1,
      port: 0,
      store,
    })
    const v2 = generateIdentityKeys('messageu').publicKeyDer
    const a = generateIdentityKeys('strong')
    const b = generateIdentityKeys('strong')
    await store.addUser(RELAY_USERS.v2a, 'fuzz-v2a', v2)
    await store.addUser(RELAY_USERS.v2b, 'fuzz-v2b', v2)
    await store.addUser(RELAY_USERS.v3a, 'fuzz-v3a', a.publicKeyDer)
    await store.addUser(RELAY_USERS.v3b, 'fuzz-v3b', b.publicKeyDer)
    return {bugs, dir, inputs: 0, keys: {v2, v3a: a.privateKey, v3b: b.privateKey, v3bPub: parsePublicKey(b.publicKeyDer), v3der: a.publicKeyDer}, server, store}
  },
  dict: [],
  maxLen: 16 * 1024,
  name: 'relay',
  async run(input, ctx) {
    // what mutated sends and registrations leave behind is dropped now and then, so the store stays small
    if (++ctx.inputs % 5000 === 0) {
      ctx.store.flush() // what the journal still holds, into the table first
      await ctx.store.sql.run('DELETE FROM relay_messages')
      const keep = Object.values(RELAY_USERS)
      await ctx.store.sql.run(`DELETE FROM relay_clients WHERE id NOT IN (${keep.map(() => '?').join(', ')})`, keep)
    }
    const sock = new FakeSocket()
    const serving = (ctx.server as unknown as {serve: (s: unknown) => Promise<void>}).serve(sock)
    for (const c of chunks(input)) sock.push(c)
    sock.push(null)
    await serving
    if (ctx.bugs.length > 0) {
      const b = ctx.bugs.splice(0)
      throw new FuzzBug(b.join('\n'))
    }
    const r = sock.replies.join('')
    return `${sock.replies.length}:${r.length > 3 ? Buffer.from(r, 'latin1').readUInt16LE(1) : -1}`
  },
  seeds(ctx) {
    const out: Buffer[] = []
    const send = (v: ProtocolVersion, from: Buffer, to: Buffer, type: number, content: Buffer) =>
      encodeRequest(v, from, Op.send, Buffer.concat([encodeSendHeader(to, type, content.length), content]))
    for (const v of [1, 2, 3] as ProtocolVersion[]) {
      const [from, to] = v === 3 ? [RELAY_USERS.v3a, RELAY_USERS.v3b] : [RELAY_USERS.v2a, RELAY_USERS.v2b]
      // strong-suite contents (v3) carry the sender's counter first (docs/relay.md, Replays); MessageU's do not
      const contents: [number, Buffer][] =
        v === 3
          ? [
              [MessageType.keyRequest, Buffer.alloc(0)],
              [MessageType.symmetricKey, sealKeyMessage('strong', ctx.keys.v3a, ctx.keys.v3bPub, newSymKey('strong'), from, to, 1n)],
              [MessageType.text, encrypt('strong', newSymKey('strong'), {recipient: to, sender: from, type: MessageType.text}, 2n, Buffer.from('hello'))],
              [MessageType.file, encrypt('strong', newSymKey('strong'), {recipient: to, sender: from, type: MessageType.file}, 3n, Buffer.alloc(2000, 7))],
            ]
          : [
              [MessageType.keyRequest, Buffer.alloc(0)],
              [MessageType.text, Buffer.alloc(16, 9)],
              [MessageType.file, Buffer.alloc(1040, 5)],
            ]
      const reqs = [
        encodeRequest(v, Buffer.alloc(16), Op.register, encodeRegisterPayload(v, `user${v}`, v === 3 ? ctx.keys.v3der : ctx.keys.v2)),
        encodeRequest(v, from, Op.list),
        encodeRequest(v, from, Op.publicKey, to),
        ...contents.map(([type, c]) => send(v, from, to, type, c)),
        encodeRequest(v, to, Op.pull),
      ]
      out.push(...reqs, Buffer.concat(reqs), Buffer.concat(reqs.map((r) => padFrame(r))))
    }
    return out
  },
  async teardown(ctx) {
    await ctx.server.stop()
    await ctx.store.close()
    rmSync(ctx.dir, {force: true, recursive: true})
  },
  what: 'RelayServer request handling (headers, register/list/key/send/pull payloads, framing detection) over an in-process socket and a SQLite store; seeds act as registered users and send v3 contents with their counters',
}

// --- the proxy's JSON body -------------------------------------------------------------------------

const proxyJson: Harness<null> = {
  async setup() {
    return null
  },
  dict: ['"sender_number"', '"message_body"', '"metadata"', '"+4915200000000"', '{', '}', '[', ']', ':', ',', 'null', 'true', '1e999', '"\\u0000"', '"\\ud800"', '"__proto__"', '"constructor"'],
  maxLen: 16 * 1024,
  name: 'proxy-json',
  run(input) {
    // the first byte picks an Idempotency-Key shape so that header is fuzzed too
    const idem = input.length > 0 && input[0] < 32 ? input.subarray(1, 1 + (input[0] % 8) * 40).toString('latin1') : undefined
    return typed(() => validateIngest(input, 'application/json', idem, 1000), mqCode)
  },
  seeds() {
    return [
      {message_body: 'hello', sender_number: '+4915200000000'},
      {message_body: 'héllo 👋', metadata: {a: [1, 2, {b: null}]}, sender_number: '+12025550123'},
      {message_body: ' ', sender_number: '0049'},
      {message_body: 'x'.repeat(1001), sender_number: '+1'},
    ].map((o) => Buffer.from(JSON.stringify(o)))
  },
  what: 'validateIngest: JSON body and Idempotency-Key of POST /api/v1/messages',
}

// --- config YAML -----------------------------------------------------------------------------------

const configYaml: Harness<null> = {
  async setup() {
    return null
  },
  dict: ['broker:\n', '  port: ', 'store:\n  url: ', 'redis:\n', 'proxy:\n', '  - ', ': ', '\n', '&a ', '*a', '<<: *a\n', '!!binary ', '!!str ', '{', '}', '[', ']', '"', "'", '#', '---\n', '...\n', '? ', '|\n', '>\n', '~', 'null', '1e309', '0x10', '__proto__: '],
  maxLen: 8192,
  name: 'config-yaml',
  run(input) {
    return typed(() => resolveSources([parseYamlSource(input.toString('utf8'), 'fuzz.yaml')]), mqCode)
  },
  seeds() {
    const shipped = new URL('../../../config/mq.yaml', import.meta.url)
    return [readFileSync(shipped), Buffer.from('broker:\n  port: 5700\n  api_port: 5701\nstore:\n  url: sqlite\n'), Buffer.from('log_level: debug\nbroker:\n  permissions:\n    - identity: "*"\n      publish: ["*"]\n')]
  },
  what: 'parseYamlSource + resolveSources: YAML syntax, anchors and aliases, schema validation with file:line blame',
}

// --- PEM / CRL loading -----------------------------------------------------------------------------

interface PemCtx {
  dir: string
  home: MqHome
  ca: X509Certificate
  signPem: string
}

const pemCrl: Harness<PemCtx> = {
  async setup() {
    const dir = mkdtempSync(join(tmpdir(), 'mq-fuzz-pem-'))
    const home = new MqHome(dir)
    const ca = CertificateAuthority.open(home, {...defaultConfig().pki, key_bits: 2048})
    await ca.ensureDevelopment({clients: ['alice'], servers: []})
    await ca.keygen('bob')
    await ca.revoke('alice')
    await ca.publishCrl()
    return {ca: new X509Certificate(readFileSync(home.caCert)), dir, home, signPem: readFileSync(join(home.keys, 'bob.sign.crt'), 'utf8')}
  },
  dict: ['-----BEGIN X509 CRL-----\n', '-----END X509 CRL-----\n', '-----BEGIN CERTIFICATE-----\n', '-----END CERTIFICATE-----\n', '\n', '=', 'MII', 'AA', '\u0000'],
  maxLen: 16 * 1024,
  name: 'pem-crl',
  run(input, ctx) {
    // the first byte picks the loader: the CRL, or a certificate fetched from the key directory
    if ((input[0] ?? 0) & 1) return typed(() => crlSerials(input, ctx.ca), mqCode)
    return typed(() => verifyIdentityCerts(ctx.home, 'bob', input.toString('utf8'), ctx.signPem), mqCode)
  },
  seeds(ctx) {
    const crl = readFileSync(ctx.home.crl)
    const enc = readFileSync(join(ctx.home.keys, 'bob.crt'))
    return [Buffer.concat([Buffer.from([1]), crl]), crl, enc, Buffer.concat([Buffer.from([0]), enc]), readFileSync(ctx.home.caCert)]
  },
  async teardown(ctx) {
    rmSync(ctx.dir, {force: true, recursive: true})
  },
  what: 'crlSerials (pki/crl.pem, signature against the CA) and verifyIdentityCerts (certificates from the key directory)',
}

// --- native envelopes: MQE3 (binary grant), MQE2 and MQE1 as mq recv opens them --------------------

interface EnvelopeCtx {
  /** bob, for the envelopes sealed at setup; the MQE2 fixture's bob, for the envelopes of the previous build */
  openers: EnvelopeOpener[]
  grants: Map<string, {grantBytes: Buffer; signature: Buffer}>
  seeds: Buffer[]
  inputs: number
}

const fixture = (name: string) =>
  JSON.parse(readFileSync(new URL(`../../../test/unit/crypto/fixtures/${name}.json`, import.meta.url), 'utf8')) as {aliceSignPublic: string; bobEncPrivate: string; envelopes: {b64: string}[]}

const envelope: Harness<EnvelopeCtx> = {
  async setup() {
    const kp = () => generateKeyPairSync('rsa', {modulusLength: 2048})
    const alice = kp()
    const bob = kp()
    const carol = kp()
    const grants = new Map<string, {grantBytes: Buffer; signature: Buffer}>()
    // the receiver's grant store, as the replay database keeps it: references open once their grant was seen
    const store: GrantStore = {getGrant: (h) => grants.get(h.toString('hex')), putGrant: (h, grantBytes, signature) => void grants.set(h.toString('hex'), {grantBytes, signature})}
    const mqe2 = fixture('mqe2')
    const mqe2Alice = createPublicKey(mqe2.aliceSignPublic)
    const openers = [
      new EnvelopeOpener({grants: store, identity: {encPrivateKey: bob.privateKey, name: 'bob'}, resolveSender: async (n) => (n === 'alice' ? alice.publicKey : Promise.reject(new Error(`no ${n}`)))}),
      new EnvelopeOpener({grants: store, identity: {encPrivateKey: createPrivateKey(mqe2.bobEncPrivate), name: 'bob'}, resolveSender: async (n) => (n === 'alice' ? mqe2Alice : Promise.reject(new Error(`no ${n}`)))}),
    ]
    const sealer = (to: [string, KeyObject][], grantEvery: number) => new EnvelopeSealer({grantEvery, recipients: to.map(([name, k]) => ({encPublicKey: k, name})), sender: {name: 'alice', signPrivateKey: alice.privateKey}})
    const one = sealer([['bob', bob.publicKey]], 1000)
    const two = sealer([['bob', bob.publicKey], ['carol', carol.publicKey]], 1)
    const inline = one.seal(Buffer.from('hello bob'), {headers: {'trace-id': 'abc'}}).envelope
    const G = inline.readUInt32BE(5)
    const seeds = [
      inline,
      one.seal(Buffer.from('a reference')).envelope,
      two.seal(Buffer.from('for bob and carol'), {contentType: 'text/plain'}).envelope,
      // the binary grant alone: the input goes to parseGrant3 when it starts with its magic
      inline.subarray(9, 9 + G),
      ...mqe2.envelopes.map((e) => Buffer.from(e.b64, 'base64')),
      ...fixture('mqe1').envelopes.map((e) => Buffer.from(e.b64, 'base64')),
    ]
    // the receivers know the grants of the seeds, so mutations reach the header, MAC and GCM checks too
    for (const sd of seeds) for (const o of openers) await o.open(sd).catch(() => {})
    return {grants, inputs: 0, openers, seeds}
  },
  dict: ['MQE3', 'MQE2', 'MQE1', 'MQG3', '\u0001', '\u0002', '\u0003', '\u0000\u0000', '\u00ff\u00ff', '\u0001\u0000', 'alice', 'bob', 'carol', '{"k":"v"}', '{', '"'],
  maxLen: 4096,
  name: 'envelope',
  async run(input, ctx) {
    // keep memory bounded: forget grants learned from inputs now and then (the seeds' are re-learned)
    if (++ctx.inputs % 5000 === 0) ctx.grants.clear()
    if (input.subarray(0, 4).toString('latin1') === 'MQG3') return typed(() => parseGrant3(input), mqCode)
    const outcomes: string[] = []
    for (const o of ctx.openers) {
      try {
        await o.open(input)
        outcomes.push('ok')
      } catch (error) {
        const code = mqCode(error)
        if (code === undefined) throw new FuzzBug(describe(error), error)
        outcomes.push(code)
      }
    }
    return outcomes.join(',')
  },
  seeds(ctx) {
    return ctx.seeds
  },
  what: 'EnvelopeOpener.open (MQE3 with its binary grant, MQE2, MQE1: framing, grant parsing, header, checks) and parseGrant3 alone',
}

export const HARNESSES: Harness<any>[] = [brokerFrames, ciphermq, relay, proxyJson, configYaml, pemCrl, envelope]
