import assert from 'node:assert/strict'
import {after, before, describe, test} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {RelayConnection} from '../../../src/lib/relay/client.js'
import {encodeCounter, encrypt, newSymKey, parsePublicKey, wrapKey} from '../../../src/lib/relay/crypto.js'
import {MessageType, Op} from '../../../src/lib/relay/protocol.js'
import {type FetchedMessage, RelayClient} from '../../../src/lib/relay/service.js'
import {tempHome} from '../../helpers/home.js'
import {type RunningRelay, startRelay} from './harness.js'

/**
 * Client ids are public (every user list carries them) and the relay takes a request's sender
 * from its header, so anyone can send "as" anyone. In the strong suite a symmetric key is signed
 * by its sender, so such a message cannot install a key, and no text can be forged with one.
 */
describe('relay strong suite: another client cannot pose as a peer', () => {
  const srv = tempHome('mq-relay-imp-srv-')
  const homes: Record<string, {dir: string; cleanup: () => void}> = {alice: tempHome('mq-relay-imp-a-'), bob: tempHome('mq-relay-imp-b-'), mallory: tempHome('mq-relay-imp-m-')}
  let relay: RunningRelay
  const clients: Record<string, RelayClient> = {}
  const ids: Record<string, string> = {}

  before(async () => {
    relay = await startRelay({home: srv.dir})
    for (const name of ['alice', 'bob', 'mallory'] as const) {
      clients[name] = new RelayClient(new MqHome(homes[name].dir), {host: '127.0.0.1', port: relay.port}, {timeoutMs: 5000})
      ids[name] = (await clients[name].register(name, 'strong')).clientId
    }
  })
  after(async () => {
    for (const c of Object.values(clients)) c.close()
    await relay?.stop()
    for (const h of [srv, ...Object.values(homes)]) h.cleanup()
  })

  const fetch = async (name: string): Promise<FetchedMessage[]> => {
    const c = clients[name]
    const out = await c.fetch(homes[name].dir, () => {})
    c.close()
    return out
  }

  test('a genuine key exchange and text still work', async () => {
    await clients.alice.sendKey('bob')
    clients.alice.close()
    const got = await fetch('bob')
    assert.deepEqual(got.map((m) => [m.from, m.type, m.text, m.error]), [['alice', 'key', 'symmetric key received', undefined]])
    await clients.alice.sendText('bob', 'hello from alice')
    clients.alice.close()
    const t = await fetch('bob')
    assert.deepEqual(t.map((m) => [m.from, m.text, m.error]), [['alice', 'hello from alice', undefined]])
  })

  test("mallory's key and text sent with alice's client id are not accepted as alice's", async () => {
    const bobKey = (await clients.mallory.key('bob')).id
    clients.mallory.close()
    const bobPub = parsePublicKey(Buffer.from(clients.mallory.keyring.peer('bob')!.publicKey!, 'base64'))
    const aliceId = Buffer.from(ids.alice, 'hex')
    const bobId = Buffer.from(bobKey, 'hex')
    const forgedKey = newSymKey('strong')
    const conn = await RelayConnection.connect({host: '127.0.0.1', port: relay.port}, 3, 5000)
    try {
      // the key message as an unsigned client would send it, and one with mallory's own signature appended
      const wrapped = wrapKey('strong', bobPub, forgedKey)
      const counter = encodeCounter(BigInt(Date.now()) * 1000n + 1_000_000n)
      const unsigned = Buffer.concat([counter, wrapped])
      await conn.send(aliceId, Op.send, bobId, MessageType.symmetricKey, unsigned.length, unsigned)
      const malloryPriv = clients.mallory.keyring.identity().privateKey
      const {sign, constants} = await import('node:crypto')
      const sig = sign('sha256', Buffer.concat([Buffer.from('mq-relay-v3-key\0'), aliceId, bobId, counter, wrapped]), {key: malloryPriv, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32})
      const signed = Buffer.concat([counter, wrapped, sig])
      await conn.send(aliceId, Op.send, bobId, MessageType.symmetricKey, signed.length, signed)
      const text = encrypt('strong', forgedKey, {recipient: bobId, sender: aliceId, type: MessageType.text}, BigInt(Date.now()) * 1000n + 2_000_000n, Buffer.from('FORGED: pay mallory'))
      await conn.send(aliceId, Op.send, bobId, MessageType.text, text.length, text)
    } finally {
      conn.close()
    }
    const got = await fetch('bob')
    assert.equal(got.length, 3)
    assert.equal(got[0].type, 'key')
    assert.match(got[0].error ?? '', /signature/)
    assert.match(got[1].error ?? '', /signature/)
    assert.equal(got[2].type, 'text')
    assert.equal(got[2].text, undefined, 'the forged text must not be shown as a message from alice')
    assert.ok(got[2].error)
    // alice's real key still works afterwards
    await clients.alice.sendText('bob', 'still alice')
    clients.alice.close()
    const t = await fetch('bob')
    assert.deepEqual(t.map((m) => [m.from, m.text, m.error]), [['alice', 'still alice', undefined]])
  })
})
