import {existsSync} from 'node:fs'

import {Gauge, type Registry} from 'prom-client'

import type {MqHome} from '../config/home.js'
import {readCrlFile} from './index.js'

/**
 * The CRL's thisUpdate and nextUpdate as Unix times, for alerts before OpenSSL starts refusing
 * handshakes ("CRL has expired") and for the CRL age panel. Absent when there is no CRL.
 */
export function registerCrlMetrics(home: MqHome, registry: Registry): void {
  const read = () => {
    if (!existsSync(home.crl)) return undefined
    // parsed again only when the file changes, not on every scrape (the cache /health uses)
    const p = readCrlFile(home)
    if ('error' in p) return undefined
    return {nextUpdate: p.crl.nextUpdate ? p.crl.nextUpdate.getTime() / 1000 : null, thisUpdate: p.crl.thisUpdate.getTime() / 1000}
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
