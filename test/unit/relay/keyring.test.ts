import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {RelayKeyring} from '../../../src/lib/relay/identity.js'
import {tempHome} from '../../helpers/home.js'

// Peer names come from other users of the relay: names that are also Object.prototype members
// must be stored and found like any other name.
test('relay keyring: peers named __proto__, constructor, toString are ordinary peers', () => {
  const h = tempHome()
  try {
    const home = new MqHome(h.dir)
    const k = new RelayKeyring(home)
    for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      assert.equal(k.peer(name), undefined, `${name} is unknown before it is saved`)
    }
    k.savePeer({id: '11'.repeat(16), name: '__proto__', publicKey: 'AAAA'})
    k.savePeer({id: '22'.repeat(16), name: 'constructor', symKey: 'BBBB'})
    k.savePeer({id: '33'.repeat(16), name: 'alice'})
    assert.deepEqual(k.peer('__proto__'), {id: '11'.repeat(16), name: '__proto__', publicKey: 'AAAA'})
    assert.deepEqual(k.peer('constructor'), {id: '22'.repeat(16), name: 'constructor', symKey: 'BBBB'})
    assert.equal(k.peer('toString'), undefined)
    assert.equal(k.peerById(Buffer.from('11'.repeat(16), 'hex'))?.name, '__proto__')
    // merged on a second save with the same id, reset when the id changes
    k.savePeer({id: '11'.repeat(16), name: '__proto__', symKey: 'CCCC'})
    assert.deepEqual(k.peer('__proto__'), {id: '11'.repeat(16), name: '__proto__', publicKey: 'AAAA', symKey: 'CCCC'})
    k.savePeer({id: '44'.repeat(16), name: 'constructor'})
    assert.deepEqual(k.peer('constructor'), {id: '44'.repeat(16), name: 'constructor'})
    // the file holds them as plain keys, and a fresh keyring reads them back
    const file = JSON.parse(readFileSync(join(home.relay, 'peers.json'), 'utf8')) as Record<string, unknown>
    assert.ok(Object.hasOwn(file, '__proto__') && Object.hasOwn(file, 'constructor') && Object.hasOwn(file, 'alice'))
    assert.equal(new RelayKeyring(home).peer('__proto__')?.symKey, 'CCCC')
    assert.equal(new RelayKeyring(home).peer('alice')?.id, '33'.repeat(16))
  } finally {
    h.cleanup()
  }
})
