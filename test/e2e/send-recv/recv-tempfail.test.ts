/**
 * mq recv must reject (dead-letter) a message only when the message itself is bad. A failure of
 * the receiver's own environment while checking it is temporary: the message goes back to the
 * queue, recv reports it on stderr and exits 75, and a later run receives it.
 *
 * The temporary failure here is real, not mocked: bob's receiver runs as an unprivileged user (as
 * a receiver should; uid 65534 when the tests run as root) and cannot read the certificate of the
 * sender in its key cache (EACCES), e.g. because a run as another user rewrote the cache.
 */
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {chmodSync, chownSync, cpSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import type {BrokerClient, Delivery} from '../../../src/lib/client/client.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {IdentityResolver, MessageReceiver, type ReceiveSink, type Received, receiveLoop} from '../../../src/lib/crypto/index.js'
import {MqError} from '../../../src/lib/errors.js'
import {loadIdentity} from '../../../src/lib/pki/index.js'
import {BIN, type CliResult, ROOT, runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {type TestBroker, startTestBroker} from './harness.js'

const isRoot = process.getuid?.() === 0
const NOBODY = 65534

/** Runs the CLI as bob's receiver: as an unprivileged user when we are root, so file permissions apply. */
function runAsReceiver(args: string[], home: string, env: NodeJS.ProcessEnv): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: ROOT,
      env: {...process.env, ...env, HOME: home, MQ_HOME: home, NO_COLOR: '1', XDG_CACHE_HOME: join(home, '.cache'), XDG_CONFIG_HOME: join(home, '.config'), XDG_DATA_HOME: join(home, '.local')},
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(isRoot ? {gid: NOBODY, uid: NOBODY} : {}),
    })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (d: Buffer) => out.push(d))
    child.stderr.on('data', (d: Buffer) => err.push(d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      const stdoutBytes = Buffer.concat(out)
      resolve({code: code ?? 128, stderr: Buffer.concat(err).toString(), stdout: stdoutBytes.toString(), stdoutBytes})
    })
  })
}

/** Gives bob's whole home to the receiver's user (what `mq` would have created running as that user). */
function ownHome(dir: string): void {
  if (!isRoot) return
  const walk = (p: string): void => {
    chownSync(p, NOBODY, NOBODY)
    if (statSync(p).isDirectory()) for (const e of readdirSync(p)) walk(join(p, e))
  }
  walk(dir)
}

describe('mq recv: temporary failures requeue, bad messages are rejected', () => {
  let b: TestBroker
  let admin: BrokerClient
  const bobMachine = tempHome('mq-e2e-bob-')
  const bobHome = new MqHome(bobMachine.dir)
  let env: NodeJS.ProcessEnv

  const queue = async (name: string): Promise<{messages: number; unacked: number}> => {
    const q = (await admin.listQueues()).find((x) => x.name === name)
    assert.ok(q, `queue ${name} exists`)
    return {messages: q.messages, unacked: q.unacked}
  }

  before(async () => {
    b = await startTestBroker(['alice', 'bob'])
    admin = await b.client()
    await admin.declareQueue('inbox', {deadLetter: 'inbox.dlq', durable: true})
    await admin.declareQueue('inbox.dlq', {durable: true})
    // alice's certificates are only in the broker's key directory, not on bob's machine
    const pub = await runCli(['keys', 'publish', 'alice'], {env: b.env})
    assert.equal(pub.code, 0, pub.stderr)
    // bob's machine: the CA certificate, a TLS client identity and bob's own end-to-end keys
    chmodSync(bobMachine.dir, 0o755)
    mkdirSync(bobHome.issued, {recursive: true})
    mkdirSync(bobHome.keys, {mode: 0o700, recursive: true})
    cpSync(b.home.caCert, bobHome.caCert)
    for (const f of ['admin.crt', 'admin.key']) cpSync(join(b.home.issued, f), join(bobHome.issued, f))
    for (const f of ['bob.crt', 'bob.key', 'bob.sign.crt', 'bob.sign.key']) cpSync(join(b.home.keys, f), join(bobHome.keys, f))
    env = {MQ_BROKER: b.env.MQ_BROKER}
  })
  after(async () => {
    await admin?.close()
    await b?.stop()
    bobMachine.cleanup()
  })

  it('the first receive fetches the sender from the key directory and caches it', async () => {
    ownHome(bobMachine.dir)
    const s = await runCli(['send', '--queue', 'inbox', '--from', 'alice', '--to', 'bob', 'first'], {env: b.env})
    assert.equal(s.code, 0, s.stderr)
    const r = await runAsReceiver(['recv', '--queue', 'inbox', '--as', 'bob', '--identity', 'admin', '--timeout', '10s'], bobMachine.dir, env)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'first')
    assert.ok(statSync(join(bobHome.keys, 'cache', 'alice.sign.crt')).isFile())
  })

  it('an unreadable cached sender certificate: the message stays queued, exit 75, received once readable', async () => {
    const s = await runCli(['send', '--queue', 'inbox', '--from', 'alice', '--to', 'bob', 'hello bob'], {env: b.env})
    assert.equal(s.code, 0, s.stderr)
    const cached = join(bobHome.keys, 'cache', 'alice.sign.crt')
    chmodSync(cached, 0o000)
    const r = await runAsReceiver(['recv', '--queue', 'inbox', '--as', 'bob', '--identity', 'admin', '--timeout', '10s'], bobMachine.dir, env)
    assert.equal(r.code, 75, r.stderr)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /E_KEY_READ/)
    assert.match(r.stderr, /alice\.sign\.crt/)
    assert.match(r.stderr, /back to inbox|requeued/i)
    assert.deepEqual(await queue('inbox'), {messages: 1, unacked: 0})
    assert.deepEqual(await queue('inbox.dlq'), {messages: 0, unacked: 0})
    // the condition clears: the same message is received
    chmodSync(cached, 0o644)
    const again = await runAsReceiver(['recv', '--queue', 'inbox', '--as', 'bob', '--identity', 'admin', '--timeout', '10s', '--json'], bobMachine.dir, env)
    assert.equal(again.code, 0, again.stderr)
    assert.equal(JSON.parse(again.stdout).payload, 'hello bob')
    assert.equal(JSON.parse(again.stdout).redelivered, true)
    assert.deepEqual(await queue('inbox'), {messages: 0, unacked: 0})
  })

  it('a key cache that cannot be written is no failure: the verified keys are used and the message accepted', async () => {
    rmSync(join(bobHome.keys, 'cache'), {force: true, recursive: true})
    writeFileSync(join(bobHome.keys, 'cache'), 'not a directory\n')
    ownHome(bobMachine.dir)
    const s = await runCli(['send', '--queue', 'inbox', '--from', 'alice', '--to', 'bob', 'no cache'], {env: b.env})
    assert.equal(s.code, 0, s.stderr)
    const r = await runAsReceiver(['recv', '--queue', 'inbox', '--as', 'bob', '--identity', 'admin', '--timeout', '10s'], bobMachine.dir, env)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'no cache')
    assert.match(r.stderr, /cache/)
    assert.deepEqual(await queue('inbox.dlq'), {messages: 0, unacked: 0})
    rmSync(join(bobHome.keys, 'cache'), {force: true})
  })

  it('the key directory down (E_KEY_DIRECTORY): the loop holds the message, stops, and requeues it once', async () => {
    // the receiving loop on one connection; the key directory on another that the broker has
    // closed: a real failed lookup (E_BROKER_CLOSED under E_KEY_DIRECTORY), not a stub
    const s = await runCli(['send', '--queue', 'inbox', '--from', 'alice', '--to', 'bob', 'directory down'], {env: b.env})
    assert.equal(s.code, 0, s.stderr)
    const consumer = await b.client()
    const directory = await b.client()
    await directory.close()
    const me = loadIdentity(b.home, 'bob', {withPrivate: true})
    const failures: unknown[] = []
    const written: Received[] = []
    const sink: ReceiveSink<Delivery> = {
      flush: async () => {},
      write: (r: Received) => written.push(r),
    }
    const before = (await admin.listQueues()).find((q) => q.name === 'inbox')!
    try {
      const rx = new MessageReceiver({accept: ['native'], identity: {encPrivateKey: me.encPrivateKey!, name: 'bob'}, replay: null, resolveSender: new IdentityResolver(bobHome, directory).senderResolver()})
      const result = await receiveLoop(consumer, rx, sink, {
        idleTimeoutMs: 10_000,
        onDefer: (_d, err) => failures.push(err),
        onReject: (_d, err) => assert.fail(`rejected: ${String(err)}`),
        prefetch: 16,
        queue: 'inbox',
      })
      assert.deepEqual({accepted: result.accepted, deferred: result.deferred, rejected: result.rejected, stoppedBy: result.stoppedBy}, {accepted: 0, deferred: 1, rejected: 0, stoppedBy: 'tempfail'})
    } finally {
      await consumer.close()
    }
    assert.equal(written.length, 0)
    assert.equal(failures.length, 1)
    assert.equal((failures[0] as MqError).code, 'E_KEY_DIRECTORY')
    const after = (await admin.listQueues()).find((q) => q.name === 'inbox')!
    assert.equal(after.messages, 1)
    // delivered once: no hot loop on the held message
    assert.equal(after.delivered - before.delivered, 1)
    assert.deepEqual(await queue('inbox.dlq'), {messages: 0, unacked: 0})
    const r = await runAsReceiver(['recv', '--queue', 'inbox', '--as', 'bob', '--identity', 'admin', '--timeout', '10s'], bobMachine.dir, env)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'directory down')
  })

  it('a message that is definitively bad is still rejected to the dead-letter queue', async () => {
    const s = await runCli(['send', '--queue', 'inbox', '--from', 'bob', '--to', 'alice', 'not for bob'], {env: b.env})
    assert.equal(s.code, 0, s.stderr)
    const r = await runAsReceiver(['recv', '--queue', 'inbox', '--as', 'bob', '--identity', 'admin', '--timeout', '3s'], bobMachine.dir, env)
    assert.equal(r.code, 65, r.stderr)
    assert.match(r.stderr, /E_ENVELOPE_NOT_FOR_ME/)
    assert.deepEqual(await queue('inbox'), {messages: 0, unacked: 0})
    assert.deepEqual(await queue('inbox.dlq'), {messages: 1, unacked: 0})
  })
})
