// The A/B scripts' common start: an in-process relay on SQLite in a temp dir, users a and b registered (v3)
// on a connection each, a strong key and a 100-byte text. close() stops all and removes the dir.
import {generateKeyPairSync} from 'node:crypto'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

export async function startPair(root) {
  const {RelayServer} = await import(`${root}/dist/src/lib/relay/server.js`)
  const {RelayStore} = await import(`${root}/dist/src/lib/relay/store.js`)
  const {RelayConnection} = await import(`${root}/dist/src/lib/relay/client.js`)
  const crypto = await import(`${root}/dist/src/lib/relay/crypto.js`)
  const protocol = await import(`${root}/dist/src/lib/relay/protocol.js`)
  const {Op, MessageType, encodeRegisterPayload} = protocol
  const dir = mkdtempSync(join(tmpdir(), 'relay-ab-'))
  const store = await RelayStore.open({dataDir: dir + '/data', url: 'sqlite'})
  const server = new RelayServer({filesDir: dir + '/data/files', host: '127.0.0.1', idleTimeoutMs: 60000, maxFileBytes: 1 << 30, maxTextBytes: 16 << 20, port: 0, store})
  await server.start()
  const address = {host: '127.0.0.1', port: server.port}
  const key = generateKeyPairSync('rsa', {modulusLength: 2048}).publicKey.export({format: 'der', type: 'spki'})
  const register = async (conn, name) => conn.call(Buffer.alloc(16), Op.register, encodeRegisterPayload(3, name, key), 'register')
  const a = await RelayConnection.connect(address, 3), b = await RelayConnection.connect(address, 3)
  const idA = await register(a, 'a')
  const idB = await register(b, 'b')
  const sym = crypto.newSymKey('strong')
  const binding = {recipient: idB, sender: idA, type: MessageType.text}
  const plain = Buffer.alloc(100, 0x61)
  const close = async () => { a.close(); b.close(); await server.stop(); await store.close(); rmSync(dir, {recursive: true, force: true}) }
  return {RelayConnection, a, address, b, binding, close, crypto, idA, idB, plain, protocol, register, sym}
}
