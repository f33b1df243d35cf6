import assert from 'node:assert/strict'
import {constants, createCipheriv, createDecipheriv, generateKeyPairSync, privateDecrypt, publicEncrypt, createPublicKey, randomBytes} from 'node:crypto'
import {connect} from 'node:net'
import {test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {freePort} from '../../helpers/services.js'
import {spawnRelay} from './relay-process.js'

/**
 * A stand-in for a MessageU client, written straight from the seed (not from mq's code): padded
 * framing, one request per connection, RSA-1024 with e = 17, OAEP-SHA-1, AES-128-CBC with a zero IV.
 */
class MessageUClient {
  id: Buffer = Buffer.alloc(16)
  readonly keys = generateKeyPairSync('rsa', {modulusLength: 1024, publicExponent: 17})
  readonly pub = this.keys.publicKey.export({format: 'der', type: 'spki'})

  constructor(private readonly port: number) {}

  /** Sends one padded request on a new connection, returns the reply (code, payload) after checking its padding. */
  request(code: number, payload: Buffer): Promise<{code: number; payload: Buffer}> {
    const head = Buffer.alloc(23)
    this.id.copy(head, 0)
    head[16] = 2
    head.writeUInt16LE(code, 17)
    head.writeUInt32LE(payload.length, 19)
    let frame = Buffer.concat([head, payload])
    frame = Buffer.concat([frame, Buffer.alloc((1024 - (frame.length % 1024)) % 1024)])
    return new Promise((resolve, reject) => {
      const s = connect({host: '127.0.0.1', port: this.port})
      const got: Buffer[] = []
      s.on('data', (d: Buffer) => {
        got.push(d)
        const all = Buffer.concat(got)
        if (all.length >= 7) {
          const size = all.readUInt32LE(3)
          const total = Math.ceil((7 + size) / 1024) * 1024
          if (all.length >= total) {
            s.destroy()
            assert.equal(all.length, total, 'reply padded to a 1024 multiple')
            resolve({code: all.readUInt16LE(1), payload: all.subarray(7, 7 + size)})
          }
        }
      })
      s.on('error', reject)
      s.write(frame)
    })
  }
}

const cbc = (key: Buffer, data: Buffer, enc: boolean) => {
  const c = enc ? createCipheriv('aes-128-cbc', key, Buffer.alloc(16)) : createDecipheriv('aes-128-cbc', key, Buffer.alloc(16))
  return Buffer.concat([c.update(data), c.final()])
}

test('mq --compat messageu and a MessageU-style client exchange a key and texts both ways', async () => {
  const server = tempHome('mq-relay-mu-')
  const h = tempHome('mq-relay-mu-user-')
  const port = await freePort()
  const relay = await spawnRelay({args: ['--port', String(port)], home: server.dir})
  try {
    const mu = new MessageUClient(port)
    assert.equal(mu.pub.length, 160)
    const name = Buffer.alloc(255)
    name.write('messageu-client')
    const reg = await mu.request(600, Buffer.concat([name, mu.pub]))
    assert.equal(reg.code, 2100)
    mu.id = reg.payload

    const addr = `127.0.0.1:${port}`
    assert.equal((await runCli(['relay', 'register', 'mq-user', '--compat', 'messageu', '--relay', addr], {home: h.dir})).code, 0)

    // MessageU side: find mq-user, fetch its key, send it a symmetric key and a text
    const list = await mu.request(601, Buffer.alloc(0))
    assert.equal(list.code, 2101)
    let target: Buffer | undefined
    for (let o = 0; o < list.payload.length; o += 271) {
      if (list.payload.subarray(o + 16, o + 271).toString('latin1').replace(/\0.*$/s, '') === 'mq-user') target = list.payload.subarray(o, o + 16)
    }
    assert.ok(target)
    const key = await mu.request(602, target)
    assert.equal(key.code, 2102)
    const theirKey = createPublicKey({format: 'der', key: key.payload.subarray(16), type: 'spki'})
    const sym = randomBytes(16)
    const wrapped = publicEncrypt({key: theirKey, oaepHash: 'sha1', padding: constants.RSA_PKCS1_OAEP_PADDING}, sym)
    const send = (type: number, content: Buffer) => {
      const h2 = Buffer.alloc(21)
      target!.copy(h2, 0)
      h2[16] = type
      h2.writeUInt32LE(content.length, 17)
      return mu.request(603, Buffer.concat([h2, content]))
    }
    assert.equal((await send(2, wrapped)).code, 2103)
    assert.equal((await send(3, cbc(sym, Buffer.from('hello from MessageU'), true))).code, 2103)

    const f = await runCli(['relay', 'fetch', '--json'], {home: h.dir})
    assert.equal(f.code, 0, f.stderr)
    const lines = f.stdout.trim().split('\n').map((l) => JSON.parse(l))
    assert.deepEqual(lines.map((l) => [l.from, l.text]), [['messageu-client', 'symmetric key received'], ['messageu-client', 'hello from MessageU']])

    // mq side answers with the shared key; the MessageU client pulls and decrypts
    const r = await runCli(['relay', 'send', 'messageu-client', '--text', 'hello from mq'], {home: h.dir})
    assert.equal(r.code, 0, r.stderr)
    const pulled = await mu.request(604, Buffer.alloc(0))
    assert.equal(pulled.code, 2104)
    assert.equal(pulled.payload[20], 3)
    const size = pulled.payload.readUInt32LE(21)
    assert.equal(cbc(sym, pulled.payload.subarray(25, 25 + size), false).toString(), 'hello from mq')

    // and mq's own key wrap opens with the MessageU client's private key
    const mq2mu = await runCli(['relay', 'send-key', 'messageu-client', '--json'], {home: h.dir})
    assert.equal(mq2mu.code, 0, mq2mu.stderr)
    const k = await mu.request(604, Buffer.alloc(0))
    const wrappedBack = k.payload.subarray(25, 25 + k.payload.readUInt32LE(21))
    assert.equal(privateDecrypt({key: mu.keys.privateKey, oaepHash: 'sha1', padding: constants.RSA_PKCS1_OAEP_PADDING}, wrappedBack).length, 16)
  } finally {
    await relay.stop()
    server.cleanup()
    h.cleanup()
  }
})
