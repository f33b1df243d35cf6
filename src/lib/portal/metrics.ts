import {Counter, Gauge, Histogram, Registry} from 'prom-client'

import type {CertView} from './ca.js'

/** The portal's Prometheus metrics, including the expiry of every certificate the CA issued. */
export class PortalMetrics {
  readonly registry = new Registry()
  private readonly requests: Counter<'method' | 'route' | 'status'>
  private readonly duration: Histogram<'route'>

  constructor(certificates?: () => CertView[]) {
    const registers = [this.registry]
    this.requests = new Counter({help: 'Portal HTTP requests, by route pattern, method and status', labelNames: ['method', 'route', 'status'], name: 'mq_portal_requests_total', registers})
    this.duration = new Histogram({buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], help: 'Portal HTTP request duration', labelNames: ['route'], name: 'mq_portal_request_duration_seconds', registers})
    if (certificates) {
      new Gauge({
        collect() {
          this.reset()
          for (const c of certificates()) if (c.status === 'active') this.set({name: c.name, serial: c.serial, type: c.type}, Math.round((Date.parse(c.not_after) - Date.now()) / 1000))
        },
        help: 'Seconds until each active certificate of the CA expires',
        labelNames: ['name', 'serial', 'type'],
        name: 'mq_certificate_expiry_seconds',
        registers,
      })
    }
  }

  observe(method: string, route: string, status: number, seconds: number): void {
    this.requests.inc({method, route, status: String(status)})
    this.duration.observe({route}, seconds)
  }

  text(): Promise<string> {
    return this.registry.metrics()
  }
}
