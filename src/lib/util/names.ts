import {DataError} from '../errors.js'

/**
 * Identity, recipient and key names become file names under $MQ_HOME (pki/issued/NAME.crt,
 * keys/NAME.key, ...) and certificate CNs: 1-64 letters, digits, '.', '_', '-' or '@', starting with
 * a letter or digit. No '/', so no name can reach outside its directory ("../../x" is refused).
 */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/

/** The one name check: every name given on the command line or over the wire that becomes a path or a CN. */
export function checkName(name: string, what = 'identity name'): string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new DataError('E_BAD_NAME', `Invalid ${what} ${JSON.stringify(name)}: use 1-64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit.`, {
      hint: 'Try this: a name like "alice" or "broker-1" (names become files under $MQ_HOME and certificate CNs).',
    })
  }
  return name
}
