import assert from 'node:assert/strict'
import {test} from 'node:test'

import {normSerial, parseSans, randomSerial} from '../../../src/lib/pki/certs.js'
import {DataError} from '../../../src/lib/errors.js'

test('serials are positive, 128-bit, and compare without case or leading zeros', () => {
  const seen = new Set<string>()
  for (let i = 0; i < 200; i++) {
    const s = randomSerial()
    assert.equal(s.length, 32)
    assert.ok(Number.parseInt(s[0], 16) >= 4 && Number.parseInt(s[0], 16) < 8, s)
    seen.add(s)
  }
  assert.equal(seen.size, 200)
  assert.equal(normSerial('00AB12'), 'ab12')
  assert.equal(normSerial('0'), '0')
})

test('SANs: DNS and IP accepted, anything else is a DataError naming the value', () => {
  assert.deepEqual(parseSans(['DNS:localhost', 'IP:127.0.0.1', 'ip:::1', 'DNS:*.example.com']), [
    {type: 2, value: 'localhost'},
    {ip: '127.0.0.1', type: 7},
    {ip: '::1', type: 7},
    {type: 2, value: '*.example.com'},
  ])
  for (const bad of ['localhost', 'URI:http://x', 'IP:300.1.1.1', 'DNS:bad_host!', 'DNS:']) {
    assert.throws(() => parseSans([bad]), (err: unknown) => err instanceof DataError && err.code === 'E_BAD_SAN' && err.exit === 65)
  }
})
