import assert from 'node:assert/strict'
import {describe, test} from 'node:test'

import {
  ERROR_CODE,
  Op,
  decodeName,
  decodePublicKeyPayload,
  decodePullEntryHeader,
  decodeRegisterPayload,
  decodeRequestHeader,
  decodeResponseHeader,
  decodeSendHeader,
  decodeUserList,
  derLength,
  encodePublicKeyPayload,
  encodePullEntryHeader,
  encodeRegisterPayload,
  encodeRequestHeader,
  encodeResponseHeader,
  encodeSendAck,
  encodeSendHeader,
  encodeUserList,
  padFrame,
  padLength,
  responseCode,
} from '../../../src/lib/relay/protocol.js'

// Fixtures are written out by hand from the seed tables (little-endian everywhere).
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const ID_A = hex('00112233445566778899aabbccddeeff')
const ID_B = hex('0102030405060708090a0b0c0d0e0f10')

describe('request headers', () => {
  test('v2 (seed 004): id 16 | version 1 | code 2 | size 4 = 23 bytes', () => {
    // 601 list, version 2, payload 0
    const wire = hex('00112233445566778899aabbccddeeff 02 5902 00000000')
    assert.equal(wire.length, 23)
    const h = decodeRequestHeader(wire)
    assert.ok(!('error' in h))
    assert.equal(h.version, 2)
    assert.equal(h.code, 601)
    assert.equal(h.op, Op.list)
    assert.equal(h.payloadSize, 0)
    assert.deepEqual(h.clientId, ID_A)
    assert.deepEqual(encodeRequestHeader(2, ID_A, Op.list, 0), wire)
  })

  test('v2 register 600 with its 415-byte payload size', () => {
    const wire = hex('00000000000000000000000000000000 02 5802 9f010000')
    const h = decodeRequestHeader(wire)
    assert.ok(!('error' in h))
    assert.equal(h.code, 600)
    assert.equal(h.payloadSize, 415)
    assert.deepEqual(encodeRequestHeader(2, Buffer.alloc(16), Op.register, 415), wire)
  })

  test('v2 codes 602, 603, 604 and a 4-byte size above 64 KiB', () => {
    assert.equal((decodeRequestHeader(hex('00112233445566778899aabbccddeeff 02 5a02 10000000')) as {code: number}).code, 602)
    const send = decodeRequestHeader(hex('00112233445566778899aabbccddeeff 02 5b02 15000100'))
    assert.ok(!('error' in send))
    assert.equal(send.code, 603)
    assert.equal(send.payloadSize, 0x10015)
    assert.equal((decodeRequestHeader(hex('00112233445566778899aabbccddeeff 02 5c02 00000000')) as {code: number}).code, 604)
  })

  test('v1 (seed 002): id 16 | version 1 | code 1 | size 4 = 22 bytes', () => {
    const wire = hex('00112233445566778899aabbccddeeff 01 67 19000000')
    assert.equal(wire.length, 22)
    const h = decodeRequestHeader(wire)
    assert.ok(!('error' in h))
    assert.equal(h.version, 1)
    assert.equal(h.code, 103)
    assert.equal(h.op, Op.send)
    assert.equal(h.payloadSize, 25)
    assert.deepEqual(encodeRequestHeader(1, ID_A, Op.send, 25), wire)
    for (const [byte, code] of [['64', 100], ['65', 101], ['66', 102], ['68', 104]] as const) {
      const r = decodeRequestHeader(hex(`00112233445566778899aabbccddeeff 01 ${byte} 00000000`))
      assert.equal((r as {code: number}).code, code)
    }
  })

  test('v3 is the v2 layout with version byte 3', () => {
    const wire = hex('00112233445566778899aabbccddeeff 03 5802 23010000')
    const h = decodeRequestHeader(wire)
    assert.ok(!('error' in h))
    assert.equal(h.version, 3)
    assert.equal(h.code, 600)
    assert.equal(h.payloadSize, 0x123)
  })

  test('unknown codes are errors', () => {
    assert.ok('error' in decodeRequestHeader(hex('00112233445566778899aabbccddeeff 02 5d02 00000000')))
    assert.ok('error' in decodeRequestHeader(hex('00112233445566778899aabbccddeeff 02 5803 00000000'))) // 0x0358 = 856
    assert.ok('error' in decodeRequestHeader(hex('00112233445566778899aabbccddeeff 01 69 00000000')))
    assert.ok('error' in decodeRequestHeader(hex('00112233445566778899aabbccddeeff 01 00 00000000')))
    assert.ok('error' in decodeRequestHeader(hex('00112233445566778899aabbccddeeff 02')))
  })
})

describe('responses', () => {
  test('header: version 1 | code 2 | size 4, every code of both versions', () => {
    const cases: [number, string][] = [
      [2100, '3408'], [2101, '3508'], [2102, '3608'], [2103, '3708'], [2104, '3808'],
      [1000, 'e803'], [1001, 'e903'], [1002, 'ea03'], [1003, 'eb03'], [1004, 'ec03'], [9000, '2823'],
    ]
    for (const [code, le] of cases) {
      const wire = hex(`02 ${le} 10000000`)
      assert.deepEqual(encodeResponseHeader(2, code, 16), wire, String(code))
      assert.deepEqual(decodeResponseHeader(wire), {code, payloadSize: 16, version: 2})
    }
    assert.equal(responseCode(1, Op.pull), 1004)
    assert.equal(responseCode(2, Op.register), 2100)
    assert.equal(responseCode(3, Op.send), 2103)
    assert.equal(ERROR_CODE, 9000)
  })

  test('2101 list: id 16 | name 255 per user', () => {
    const wire = encodeUserList([{clientId: ID_A, name: 'alice'}, {clientId: ID_B, name: 'bob'}])
    assert.equal(wire.length, 2 * 271)
    assert.deepEqual(wire.subarray(0, 16), ID_A)
    assert.deepEqual(wire.subarray(16, 22), hex('616c69636500'))
    assert.ok(wire.subarray(21, 271).every((b) => b === 0))
    assert.deepEqual(wire.subarray(271, 287), ID_B)
    assert.deepEqual(decodeUserList(wire), [{clientId: ID_A, name: 'alice'}, {clientId: ID_B, name: 'bob'}])
    assert.ok('error' in decodeUserList(Buffer.alloc(270)))
  })

  test('2102 public key: id 16 | key 160 (v2) or id 16 | len 2 | key (v3)', () => {
    const key = Buffer.alloc(160, 7)
    const v2 = encodePublicKeyPayload(2, ID_A, key)
    assert.equal(v2.length, 176)
    assert.deepEqual(decodePublicKeyPayload(2, v2), {clientId: ID_A, publicKey: key})
    assert.throws(() => encodePublicKeyPayload(2, ID_A, Buffer.alloc(294)))
    const big = Buffer.alloc(294, 9)
    const v3 = encodePublicKeyPayload(3, ID_A, big)
    assert.deepEqual(v3.subarray(16, 18), hex('2601'))
    assert.deepEqual(decodePublicKeyPayload(3, v3), {clientId: ID_A, publicKey: big})
  })

  test('2103 ack: destination 16 | message id 4', () => {
    assert.deepEqual(encodeSendAck(ID_B, 0x01020304), Buffer.concat([ID_B, hex('04030201')]))
  })

  test('2104 entry: sender 16 | message id 4 | type 1 | size 4', () => {
    const wire = encodePullEntryHeader(ID_A, 7, 3, 300)
    assert.deepEqual(wire, Buffer.concat([ID_A, hex('07000000 03 2c010000')]))
    assert.deepEqual(decodePullEntryHeader(wire), {messageId: 7, sender: ID_A, size: 300, type: 3})
  })
})

describe('payloads', () => {
  test('register: name 255 (NUL-terminated ASCII) | key 160', () => {
    const key = Buffer.alloc(160, 0xab)
    const p = encodeRegisterPayload(2, 'alice', key)
    assert.equal(p.length, 415)
    assert.deepEqual(p.subarray(0, 6), hex('616c69636500'))
    assert.deepEqual(decodeRegisterPayload(2, p), {name: 'alice', publicKey: key})
    assert.ok('error' in decodeRegisterPayload(2, p.subarray(0, 414)))
  })

  test('register names: 254 characters fit, 255 without NUL do not, non-ASCII is refused', () => {
    const f = Buffer.alloc(255)
    f.write('x'.repeat(254), 'ascii')
    assert.deepEqual(decodeName(f), {name: 'x'.repeat(254)})
    assert.ok('error' in decodeName(Buffer.alloc(255, 0x41)))
    assert.ok('error' in decodeName(Buffer.alloc(255)))
    const bad = Buffer.alloc(255)
    bad.write('caf\u00e9', 'latin1')
    assert.ok('error' in decodeName(bad))
    assert.throws(() => encodeRegisterPayload(2, 'y'.repeat(255), Buffer.alloc(160)))
  })

  test('v3 register: name 255 | key length 2 | key', () => {
    const key = Buffer.alloc(294, 1)
    const p = encodeRegisterPayload(3, 'bob', key)
    assert.equal(p.length, 255 + 2 + 294)
    assert.deepEqual(p.subarray(255, 257), hex('2601'))
    assert.deepEqual(decodeRegisterPayload(3, p), {name: 'bob', publicKey: key})
    assert.ok('error' in decodeRegisterPayload(3, Buffer.concat([p, Buffer.alloc(1)])))
  })

  test('send: destination 16 | type 1 | content size 4', () => {
    const wire = encodeSendHeader(ID_B, 4, 0x00100000)
    assert.deepEqual(wire, Buffer.concat([ID_B, hex('04 00001000')]))
    assert.deepEqual(decodeSendHeader(wire), {contentSize: 0x100000, destination: ID_B, type: 4})
  })

  test('padding to multiples of 1024', () => {
    assert.equal(padLength(23), 1001)
    assert.equal(padLength(1024), 0)
    assert.equal(padLength(1025), 1023)
    assert.equal(padFrame(Buffer.alloc(438, 1)).length, 1024)
  })

  test('DER length of a zero-padded key field', () => {
    assert.equal(derLength(hex('30819d 00')), 3 + 0x9d)
    assert.equal(derLength(hex('3082012200')), 4 + 0x122)
    assert.equal(derLength(hex('0000')), undefined)
  })
})
