/**
 * Reading PEM files the user keeps (keys, certificates, the CRL): a file that does not parse is
 * bad input data (exit 65) named with its path and what is wrong, not an internal error.
 */
import {X509Certificate, createPrivateKey, type KeyObject} from 'node:crypto'
import {readFileSync} from 'node:fs'

import {DataError} from '../errors.js'

export type PemKind = 'certificate' | 'private key' | 'CRL' | 'certificate request'

/** What is wrong with a file that did not parse as KIND, in words (OpenSSL's reason kept at the end). */
function what(buf: Buffer | string, kind: PemKind, error: unknown): string {
  const text = buf.toString()
  const label = kind === 'certificate request' ? /-----BEGIN (NEW )?CERTIFICATE REQUEST-----/ : kind === 'certificate' ? /-----BEGIN CERTIFICATE-----/ : kind === 'CRL' ? /-----BEGIN (X509 )?CRL-----/ : /-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/
  if (text.trim() === '') return 'the file is empty'
  if (!text.includes('-----BEGIN')) return `no PEM block (expected -----BEGIN ${kind === 'CRL' ? 'X509 CRL' : kind === 'certificate' ? 'CERTIFICATE' : kind === 'certificate request' ? 'CERTIFICATE REQUEST' : 'PRIVATE KEY'}-----)`
  if (!label.test(text)) return `the PEM block is not a ${kind} (${/-----BEGIN ([A-Z0-9 ]+)-----/.exec(text)?.[1] ?? 'unknown'})`
  if (!/-----END [A-Z0-9 ]+-----/.test(text)) return 'the PEM block is cut short (no -----END line)'
  return `its contents do not decode as a ${kind} (${(error as Error)?.message ?? String(error)})`
}

export function badPem(path: string, buf: Buffer | string, kind: PemKind, error: unknown): DataError {
  return new DataError('E_BAD_PEM', `${path} is not a valid ${kind}: ${what(buf, kind, error)}.`, {hint: `Try this: restore ${path} from a backup, or issue it again (mq cert issue / mq keygen / mq cert crl).`})
}

/** Parses a certificate held in PATH's bytes BUF. */
export function parseCertPem(path: string, buf: Buffer | string): X509Certificate {
  try {
    return new X509Certificate(buf)
  } catch (error) {
    throw badPem(path, buf, 'certificate', error)
  }
}

/** Parses an unencrypted private key held in PATH's bytes BUF. */
export function parseKeyPem(path: string, buf: Buffer | string): KeyObject {
  try {
    return createPrivateKey(buf)
  } catch (error) {
    throw badPem(path, buf, 'private key', error)
  }
}

export function readCertFile(path: string): X509Certificate {
  return parseCertPem(path, readFileSync(path))
}
