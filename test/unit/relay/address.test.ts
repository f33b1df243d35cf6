import assert from 'node:assert/strict'
import {writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'

import {parseAddress, resolveRelayAddress, resolveRelayPort} from '../../../src/lib/relay/service.js'
import {tempHome} from '../../helpers/home.js'

test('relay port: --port, then relay.port, then ./myport.info, then 1357 with a warning', () => {
  const h = tempHome()
  try {
    assert.deepEqual(resolveRelayPort(2000, 3000, h.dir), {port: 2000, source: '--port'})
    assert.deepEqual(resolveRelayPort(undefined, 3000, h.dir), {port: 3000, source: 'relay.port'})
    const none = resolveRelayPort(undefined, undefined, h.dir)
    assert.equal(none.port, 1357)
    assert.match(none.warning ?? '', /1357/)
    writeFileSync(join(h.dir, 'myport.info'), '4242\n')
    assert.equal(resolveRelayPort(undefined, undefined, h.dir).port, 4242)
    assert.equal(resolveRelayPort(undefined, undefined, h.dir).warning, undefined)
    writeFileSync(join(h.dir, 'myport.info'), 'eighty\n')
    const bad = resolveRelayPort(undefined, undefined, h.dir)
    assert.equal(bad.port, 1357)
    assert.match(bad.warning ?? '', /not a port number/)
  } finally {
    h.cleanup()
  }
})

test('relay address: --relay, then MQ_RELAY/client.relay, then ./server.info, then 127.0.0.1:1357', () => {
  const h = tempHome()
  try {
    assert.deepEqual(resolveRelayAddress('10.0.0.1:99', '1.1.1.1:1', h.dir).address, {host: '10.0.0.1', port: 99})
    assert.deepEqual(resolveRelayAddress(undefined, 'relay.example:1357', h.dir).address, {host: 'relay.example', port: 1357})
    assert.deepEqual(resolveRelayAddress(undefined, undefined, h.dir), {address: {host: '127.0.0.1', port: 1357}, source: 'default'})
    writeFileSync(join(h.dir, 'server.info'), '127.0.0.1:5555\n')
    assert.deepEqual(resolveRelayAddress(undefined, undefined, h.dir).address, {host: '127.0.0.1', port: 5555})
    assert.deepEqual(parseAddress('[::1]:1357', 'x'), {host: '::1', port: 1357})
    assert.throws(() => parseAddress('localhost', 'x'), /HOST:PORT/)
    assert.throws(() => parseAddress('h:70000', 'x'), /HOST:PORT/)
  } finally {
    h.cleanup()
  }
})
