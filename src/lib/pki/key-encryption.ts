/**
 * Passphrase protection of private keys (the CA key): PKCS#8 EncryptedPrivateKeyInfo with PBES2,
 * scrypt as the key-derivation function and AES-256-CBC (RFC 8018, RFC 7914 section 7), the
 * format `openssl pkcs8 -topk8 -scrypt` writes and OpenSSL/Node read natively.
 *
 * Node's own KeyObject.export({cipher, passphrase}) derives the key with PBKDF2 at OpenSSL's
 * default 2,048 iterations, far below what an offline guess of a stolen key file needs (OWASP:
 * 600,000 PBKDF2-SHA256 iterations, or scrypt N=2^17 r=8 p=1 or an equal-cost choice). OpenSSL
 * refuses scrypt parameters that need more than 32 MiB when it reads such a key, so we use the
 * OWASP-equivalent N=2^14, r=8, p=5 (16 MiB, the same work as N=2^17 p=1 in five lanes).
 * Keys written before (PBKDF2) still load: createPrivateKey reads either.
 */
import {createCipheriv, type KeyObject, randomBytes, scryptSync} from 'node:crypto'
import type forge from 'node-forge'

import {forge as forgeLib} from './libs.js'

export const KEY_SCRYPT = {N: 16_384, p: 5, r: 8} as const

const asn1 = () => forgeLib().asn1
const OID_PBES2 = '1.2.840.113549.1.5.13'
const OID_SCRYPT = '1.3.6.1.4.1.11591.4.11'
const OID_AES256_CBC = '2.16.840.1.101.3.4.1.42'

const seq = (...v: forge.asn1.Asn1[]) => asn1().create(asn1().Class.UNIVERSAL, asn1().Type.SEQUENCE, true, v)
const oid = (o: string) => asn1().create(asn1().Class.UNIVERSAL, asn1().Type.OID, false, asn1().oidToDer(o).getBytes())
const octets = (b: Buffer) => asn1().create(asn1().Class.UNIVERSAL, asn1().Type.OCTETSTRING, false, b.toString('binary'))
const int = (n: number) => asn1().create(asn1().Class.UNIVERSAL, asn1().Type.INTEGER, false, asn1().integerToDer(n).getBytes())

/** PEM "ENCRYPTED PRIVATE KEY": the key as PKCS#8, sealed under scrypt(passphrase) with AES-256-CBC. */
export function encryptPrivateKey(key: KeyObject, passphrase: string, params: {N: number; r: number; p: number} = KEY_SCRYPT): string {
  const der = key.export({format: 'der', type: 'pkcs8'})
  const salt = randomBytes(16)
  const iv = randomBytes(16)
  const dk = scryptSync(passphrase, salt, 32, {N: params.N, maxmem: 256 * params.N * params.r + (1 << 20), p: params.p, r: params.r})
  const c = createCipheriv('aes-256-cbc', dk, iv)
  const encrypted = Buffer.concat([c.update(der), c.final()])
  const info = seq(
    seq(oid(OID_PBES2), seq(seq(oid(OID_SCRYPT), seq(octets(salt), int(params.N), int(params.r), int(params.p), int(32))), seq(oid(OID_AES256_CBC), octets(iv)))),
    octets(encrypted),
  )
  const body = Buffer.from(asn1().toDer(info).getBytes(), 'binary').toString('base64')
  return `-----BEGIN ENCRYPTED PRIVATE KEY-----\n${body.match(/.{1,64}/g)!.join('\n')}\n-----END ENCRYPTED PRIVATE KEY-----\n`
}
