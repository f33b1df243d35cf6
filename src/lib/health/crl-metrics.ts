import {existsSync, readFileSync} from 'node:fs'

import * as x509 from '@peculiar/x509'
import {Gauge, type Registry} from 'prom-client'

import type {MqHome} from '../config/home.js'

/**
 * The CRL's thisUpdate and nextUpdate as Unix times, for alerts before OpenSSL starts refusing
 * handshakes ("CRL has expired") and for the CRL age panel. Absent when there is no CRL.
 */
export function registerCrlMetrics(home: MqHome, registry: Registry): void {
  let cached: {key: string; thisUpdate: number; nextUpdate: number | null} | undefined
  const read = () => {
    if (!existsSync(home.crl)) return undefined
    try {
      // parsed again only when the file changes (by content), not on every scrape
      const pem = readFileSync(home.crl, 'utf8')
      const key = pem.length + pem.slice(-64)
      if (cached?.key !== key) {
        const crl = new x509.X509Crl(pem.replace(/X509 CRL/g, 'CRL'))
        cached = {key, nextUpdate: crl.nextUpdate ? crl.nextUpdate.getTime() / 1000 : null, thisUpdate: crl.thisUpdate.getTime() / 1000}
      }
      return cached
    } catch {
      return undefined
    }
  }
  new Gauge({
    collect(this: Gauge) {
      this.reset()
      const c = read()
      if (c?.nextUpdate) this.set(c.nextUpdate)
    },
    help: 'nextUpdate of pki/crl.pem (Unix time): TLS handshakes fail after it unless the CRL is republished',
    name: 'mq_crl_next_update_timestamp_seconds',
    registers: [registry],
  })
  new Gauge({
    collect(this: Gauge) {
      this.reset()
      const c = read()
      if (c) this.set(c.thisUpdate)
    },
    help: 'thisUpdate of pki/crl.pem (Unix time): when the CRL was last published',
    name: 'mq_crl_this_update_timestamp_seconds',
    registers: [registry],
  })
}
