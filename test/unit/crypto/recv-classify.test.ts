import assert from 'node:assert/strict'
import {test} from 'node:test'

import {isDefinitiveRejection} from '../../../src/lib/crypto/recv.js'
import {DataError, MqError, PermissionError, TempFailError, UnavailableError} from '../../../src/lib/errors.js'

test('mq recv rejects only on a verdict about the message; everything else is temporary', () => {
  for (const e of [
    new DataError('E_ENVELOPE_MALFORMED', 'x'),
    new PermissionError('E_ENVELOPE_TAG', 'x'),
    new PermissionError('E_ENVELOPE_NOT_FOR_ME', 'x'),
    new MqError('E_CIPHERMQ_TAG', 'x'),
    new PermissionError('E_FORMAT_REFUSED', 'x'),
    new PermissionError('E_REPLAY', 'x'),
    new PermissionError('E_REPLAY_WINDOW', 'x'),
    new PermissionError('E_SENDER_KEY_MISMATCH', 'x'),
    new PermissionError('E_IDENTITY_UNTRUSTED', 'x'),
    new PermissionError('E_IDENTITY_REVOKED', 'x'),
    new PermissionError('E_IDENTITY_EXPIRED', 'x'),
    new MqError('E_RECIPIENT_UNKNOWN', 'x'),
  ]) {
    assert.equal(isDefinitiveRejection(e), true, e.code)
  }
  for (const e of [
    new UnavailableError('E_KEY_DIRECTORY', 'x'),
    new TempFailError('E_KEY_READ', 'x'),
    new TempFailError('E_SENDER_LOOKUP', 'x'),
    new MqError('E_CA_MISSING', 'x'),
    new MqError('E_CRL_UNTRUSTED', 'x'),
    new TempFailError('E_BROKER_TIMEOUT', 'x'),
    Object.assign(new Error('SQLITE_IOERR: disk I/O error'), {code: 'SQLITE_IOERR'}),
    new TypeError('unexpected'),
    'a string',
  ]) {
    assert.equal(isDefinitiveRejection(e), false, String((e as MqError).code ?? e))
  }
})
