import {Flags} from '@oclif/core'
import {readFileSync} from 'node:fs'

import type {MqConfig} from '../config/schema.js'
import type {MqHome} from '../config/home.js'
import {UsageError} from '../errors.js'
import {CertificateAuthority, type CertRecord} from '../pki/index.js'

export const passphraseFlag = {
  'passphrase-file': Flags.string({description: 'file holding the CA key passphrase (or set MQ_CA_PASSPHRASE)'}),
}

export function openCa(home: MqHome, config: MqConfig, passphraseFile?: string): CertificateAuthority {
  let passphrase: string | undefined
  if (passphraseFile) {
    try {
      passphrase = readFileSync(passphraseFile, 'utf8').replace(/\r?\n$/, '')
    } catch (error) {
      throw new UsageError('E_PASSPHRASE_FILE', `Cannot read --passphrase-file ${passphraseFile}: ${(error as Error).message}`, {hint: 'Try this: check the path.'})
    }
  }
  return CertificateAuthority.open(home, config.pki, {passphrase})
}

export function describeCert(c: CertRecord): string {
  return [
    `name:        ${c.name}`,
    `type:        ${c.type}`,
    `status:      ${c.status}${c.reason ? ` (${c.reason}, ${c.revokedAt})` : ''}`,
    `serial:      ${c.serial}`,
    `subject:     ${c.subject}`,
    `not before:  ${c.notBefore}`,
    `not after:   ${c.notAfter}`,
    `sha256:      ${c.fingerprint}`,
    `certificate: ${c.certPath}`,
    ...(c.keyPath ? [`private key: ${c.keyPath}`] : []),
  ].join('\n')
}
