import assert from 'node:assert/strict'
import {constants, createCipheriv, createDecipheriv, createPrivateKey, privateDecrypt, publicEncrypt, randomBytes, randomUUID} from 'node:crypto'
import {readFileSync, readdirSync, statSync, writeFileSync} from 'node:fs'
import net from 'node:net'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import type {BrokerClient} from '../../../src/lib/client/client.js'
import {loadIdentity} from '../../../src/lib/pki/index.js'
import {runCli} from '../../helpers/cli.js'
import {type TestBroker, startTestBroker} from './harness.js'

/** All bytes the broker keeps on disk (its SQLite database, WAL and anything else under data/), minus our replay files. */
function brokerDiskBytes(dir: string): Buffer {
  const out: Buffer[] = []
  const walk = (d: string): void => {
    for (const n of readdirSync(d)) {
      const p = join(d, n)
      if (statSync(p).isDirectory()) walk(p)
      else if (!n.startsWith('replay-')) out.push(readFileSync(p))
    }
  }
  walk(dir)
  return Buffer.concat(out)
}

const jsonLines = (s: string): Record<string, unknown>[] =>
  s
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l))

describe('mq send / mq recv through a broker', () => {
  let b: TestBroker
  let admin: BrokerClient
  const cli = (args: string[], input?: string | Buffer) => runCli(args, {env: b.env, input})

  before(async () => {
    b = await startTestBroker(['alice', 'bob', 'carol', 'dave', 'eve'], {ciphermq: true})
    admin = await b.client()
    for (const q of ['inbox', 'files', 'flip', 'secret', 'legacy', 'fan.bob', 'fan.carol', 'fan.dave']) await admin.declareQueue(q, {deadLetter: `${q}.dlq`, durable: true})
    await admin.declareExchange('fan', 'fanout', {durable: true})
    for (const q of ['fan.bob', 'fan.carol', 'fan.dave']) await admin.bind(q, 'fan', '')
    await admin.declareExchange('legacy_ex', 'direct', {durable: true})
    await admin.bind('legacy', 'legacy_ex', 'legacy')
  })
  after(async () => {
    await admin?.close()
    await b?.stop()
  })

  const depth = async (q: string): Promise<number> => (await admin.listQueues()).find((x) => x.name === q)?.messages ?? -1

  it('carries 1,000 messages from alice to bob byte-identical and verified', async () => {
    const lines = Array.from({length: 1000}, (_, i) => `${i} ${randomBytes(1 + (i % 97)).toString('base64')} ✓`)
    const s = await cli(['send', '--queue', 'inbox', '--from', 'alice', '--to', 'bob', '--lines', '--json'], lines.join('\n') + '\n')
    assert.equal(s.code, 0, s.stderr)
    const sent = jsonLines(s.stdout)
    assert.equal(sent.length, 1000)
    assert.ok(sent.every((m) => m.format === 'native' && m.sender === 'alice'))
    const r = await cli(['recv', '--queue', 'inbox', '--as', 'bob', '--count', '1000', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const got = jsonLines(r.stdout)
    assert.equal(got.length, 1000)
    got.forEach((m, i) => {
      assert.equal(m.payload, lines[i])
      assert.equal(m.verified, true)
      assert.equal(m.sender, 'alice')
      assert.equal(m.message_id, sent[i].message_id)
    })
    assert.equal(await depth('inbox'), 0)
  })

  it('pipes a 10 MiB binary file through mq send and back out of mq recv exactly', async () => {
    const data = randomBytes(10 * 1024 * 1024)
    const s = await cli(['send', '--queue', 'files', '--from', 'alice', '--to', 'bob'], data)
    assert.equal(s.code, 0, s.stderr)
    const r = await cli(['recv', '--queue', 'files', '--as', 'bob'])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdoutBytes.length, data.length)
    assert.ok(r.stdoutBytes.equals(data))
  })

  it('a message to two recipients is readable by both and by nobody else', async () => {
    const s = await cli(['send', '--exchange', 'fan', '--routing-key', 'any', '--from', 'alice', '--to', 'bob', '--to', 'carol', 'for bob and carol'])
    assert.equal(s.code, 0, s.stderr)
    for (const who of ['bob', 'carol']) {
      const r = await cli(['recv', '--queue', `fan.${who}`, '--as', who])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, 'for bob and carol')
    }
    const d = await cli(['recv', '--queue', 'fan.dave', '--as', 'dave', '--timeout', '1s'])
    assert.equal(d.code, 65, d.stderr)
    assert.equal(d.stdout, '')
    assert.match(d.stderr, /E_ENVELOPE_NOT_FOR_ME/)
    assert.equal(await depth('fan.dave.dlq'), 1)
  })

  it('rejects an envelope with any single byte flipped, and a replayed envelope', async () => {
    const s = await cli(['send', '--queue', 'flip', '--from', 'alice', '--to', 'bob', '--json', 'the original'])
    assert.equal(s.code, 0, s.stderr)
    const stored = await admin.get('flip')
    assert.ok(stored)
    admin.ack(stored.deliveryTag)
    const env = stored.body
    const flips: Promise<unknown>[] = []
    for (let i = 0; i < env.length; i++) {
      const bad = Buffer.from(env)
      bad[i] ^= 1 << (i % 8)
      flips.push(admin.publish('', 'flip', bad))
    }
    await Promise.all(flips)
    const r = await cli(['recv', '--queue', 'flip', '--as', 'bob', '--follow', '--timeout', '1s'])
    assert.equal(r.code, 65, r.stderr.slice(-2000))
    assert.equal(r.stdout, '', 'nothing printed as valid')
    assert.equal(await depth('flip.dlq'), env.length)
    assert.equal(await depth('flip'), 0)
    // the untouched envelope is accepted once ...
    await admin.publish('', 'flip', env)
    const ok = await cli(['recv', '--queue', 'flip', '--as', 'bob'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.equal(ok.stdout, 'the original')
    // ... and refused when it comes again, in this run or a later one
    await admin.publish('', 'flip', env)
    const again = await cli(['recv', '--queue', 'flip', '--as', 'bob', '--timeout', '1s', '--json'])
    assert.equal(again.code, 65)
    assert.ok(jsonLines(again.stdout).every((x) => 'error' in x && !('payload' in x)), 'only the error object, no message')
    assert.match(again.stderr, /E_REPLAY/)
  })

  it('refuses to encrypt to a revoked identity and publishes nothing', async () => {
    // signed by eve while her certificate was still good; the receiver refuses it once she is revoked
    assert.equal((await cli(['send', '--queue', 'inbox', '--from', 'eve', '--to', 'bob', 'from eve, before'])).code, 0)
    await b.ca.revoke('eve', 'key-compromise')
    const before = await depth('inbox')
    const s = await cli(['send', '--queue', 'inbox', '--from', 'alice', '--to', 'bob', '--to', 'eve', 'not for eve'])
    assert.equal(s.code, 77, s.stderr)
    assert.match(s.stderr, /revoked/)
    assert.equal(await depth('inbox'), before)
    // a revoked sender is refused before signing...
    const forged = await cli(['send', '--queue', 'inbox', '--from', 'eve', '--to', 'bob', 'from eve'])
    assert.equal(forged.code, 77, 'mq send refuses to sign as a revoked identity')
    assert.equal(await depth('inbox'), before)
    // ... and by the receiver, for what was signed before the revocation
    const r = await cli(['recv', '--queue', 'inbox', '--as', 'bob', '--timeout', '1s'])
    assert.equal(r.code, 65)
    assert.match(r.stderr, /E_IDENTITY_REVOKED/)
  })

  it('keeps plaintext out of the broker data files, even of --plain messages (and the check can see committed rows)', async () => {
    const secret = `TOP-SECRET-${randomUUID()}`
    const visible = `NOT-SECRET-${randomUUID()}`
    assert.equal((await cli(['send', '--queue', 'secret', '--from', 'alice', '--to', 'bob', secret])).code, 0)
    const plain = await cli(['send', '--queue', 'secret', '--plain', visible, '--json'])
    assert.equal(plain.code, 0, plain.stderr)
    const plainId = String(jsonLines(plain.stdout)[0]!.message_id)
    const disk = brokerDiskBytes(b.home.data)
    // message ids stay in clear (routing metadata): the control that the committed row is on disk
    assert.ok(disk.includes(Buffer.from(plainId)), 'the control message (its id) is on disk')
    assert.ok(!disk.includes(Buffer.from(visible)), 'a --plain body is sealed at rest by the broker store')
    assert.ok(!disk.includes(Buffer.from(secret)), 'the encrypted payload is not')
    const r = await cli(['recv', '--queue', 'secret', '--as', 'bob', '--count', '2', '--accept', 'native', '--accept', 'plain', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const got = jsonLines(r.stdout)
    assert.deepEqual(
      got.map((m) => [m.payload, m.verified, m.format]),
      [
        [secret, true, 'native'],
        [visible, false, 'plain'],
      ],
    )
  })

  it('interoperates with the CipherMQ format through the broker, both ways', async () => {
    const bob = loadIdentity(b.home, 'bob', {withPrivate: true})
    // 1. a CipherMQ sender (Sender.py's scheme) publishes over the CipherMQ listener; mq recv decrypts
    const sessionKey = randomBytes(16)
    const nonce = randomBytes(16)
    const c = createCipheriv('aes-128-gcm', sessionKey, nonce)
    const ct = Buffer.concat([c.update('hello from Sender.py', 'utf8'), c.final()])
    const msg = {
      ciphertext: ct.toString('base64'),
      enc_session_key: publicEncrypt({key: bob.encPublicKey, padding: constants.RSA_PKCS1_OAEP_PADDING}, sessionKey).toString('base64'),
      message_id: randomUUID(),
      nonce: nonce.toString('base64'),
      tag: c.getAuthTag().toString('base64'),
    }
    const replies = await ciphermqSession(b.ciphermqPort, [`publish legacy_ex legacy ${JSON.stringify(msg)}`])
    assert.match(replies[0], /^ACK /)
    const refused = await cli(['recv', '--queue', 'legacy', '--as', 'bob', '--timeout', '1s'])
    assert.equal(refused.code, 65, 'unsigned formats are refused unless accepted')
    assert.match(refused.stderr, /E_FORMAT_REFUSED/)
    // the refused copy sits in legacy.dlq; publish it again for an accepting receiver
    await ciphermqSession(b.ciphermqPort, [`publish legacy_ex legacy ${JSON.stringify({...msg, message_id: randomUUID()})}`])
    const r = await cli(['recv', '--queue', 'legacy', '--as', 'bob', '--accept', 'ciphermq', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const [got] = jsonLines(r.stdout)
    assert.equal(got.payload, 'hello from Sender.py')
    assert.equal(got.verified, false)
    assert.equal(got.format, 'ciphermq')

    // 2. mq send --format ciphermq; a CipherMQ receiver (Receiver.py's scheme) consumes over the listener
    const s = await cli(['send', '--queue', 'legacy', '--to', 'bob', '--format', 'ciphermq', '--json', 'hello from mq'])
    assert.equal(s.code, 0, s.stderr)
    const [line] = await ciphermqSession(b.ciphermqPort, ['consume legacy'])
    const m = /^Message: (\S+) (.*)$/.exec(line)
    assert.ok(m, line)
    const body = JSON.parse(m[2])
    assert.equal(body.message_id, jsonLines(s.stdout)[0].message_id)
    const key = privateDecrypt({key: createPrivateKey(readFileSync(join(b.home.keys, 'bob.key'))), padding: constants.RSA_PKCS1_OAEP_PADDING}, Buffer.from(body.enc_session_key, 'base64'))
    assert.equal(key.length, 16)
    const d = createDecipheriv('aes-128-gcm', key, Buffer.from(body.nonce, 'base64'))
    d.setAuthTag(Buffer.from(body.tag, 'base64'))
    assert.equal(Buffer.concat([d.update(Buffer.from(body.ciphertext, 'base64')), d.final()]).toString(), 'hello from mq')
  })

  it('appends the CipherMQ Receiver records with --out, and exits 75 when nothing arrives', async () => {
    assert.equal((await cli(['send', '--queue', 'inbox', '--from', 'alice', '--to', 'bob', '--lines'], 'one\ntwo\n')).code, 0)
    const file = join(b.dir, 'received_messages.json')
    writeFileSync(file, '')
    const r = await cli(['recv', '--queue', 'inbox', '--as', 'bob', '--count', '2', '--out', file])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, '')
    const recs = jsonLines(readFileSync(file, 'utf8'))
    assert.deepEqual(
      recs.map((x) => x.message),
      ['one', 'two'],
    )
    for (const x of recs) assert.deepEqual(Object.keys(x).sort(), ['message', 'message_id', 'timestamp'])
    const none = await cli(['recv', '--queue', 'inbox', '--as', 'bob', '--timeout', '300ms'])
    assert.equal(none.code, 75)
  })
})

/** A CipherMQ text-protocol client: sends the lines, resolves with the first `want` replies (a delivered message is acked). */
function ciphermqSession(port: number, lines: string[], want = 1): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1')
    const got: string[] = []
    let buf = ''
    const timer = setTimeout(() => {
      sock.destroy()
      reject(new Error(`CipherMQ listener replied only ${JSON.stringify(got)}`))
    }, 10_000)
    sock.setEncoding('utf8')
    sock.on('connect', () => sock.write(lines.map((l) => l + '\n').join('')))
    sock.on('error', reject)
    sock.on('data', (d: string) => {
      buf += d
      let nl: number
      while ((nl = buf.indexOf('\n')) >= 0) {
        const l = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        if (l === 'Subscribed to queue') continue
        got.push(l)
        const id = /^Message: (\S+)/.exec(l)?.[1]
        if (id) sock.write(`ack ${id}\n`)
        if (got.length === want) {
          clearTimeout(timer)
          setTimeout(() => sock.end(), 100)
          resolve(got)
        }
      }
    })
  })
}
