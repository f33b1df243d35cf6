import {webcrypto} from 'node:crypto'
import {createRequire} from 'node:module'

import type * as X509 from '@peculiar/x509'
import type Forge from 'node-forge'

const require = createRequire(import.meta.url)
let x509Module: typeof X509 | undefined
let forgeModule: typeof Forge | undefined

/**
 * @peculiar/x509 (about 200 modules with its ASN.1 schemas and tsyringe) and node-forge load on
 * the first certificate, CSR or CRL that is built or parsed, not when a module imports the pki:
 * every CLI call imports it (TLS options, identities), and a `mq send` or `mq queue list` that
 * never parses a CRL would pay about a third of its startup CPU for them. Both are CommonJS, so a
 * synchronous require keeps the callers synchronous.
 */
export function x509(): typeof X509 {
  if (!x509Module) {
    x509Module = require('@peculiar/x509') as typeof X509
    x509Module.cryptoProvider.set(webcrypto as unknown as Parameters<typeof X509.cryptoProvider.set>[0])
  }
  return x509Module
}

export function forge(): typeof Forge {
  forgeModule ??= require('node-forge') as typeof Forge
  return forgeModule
}
