import {createServer, type Server} from 'node:http'
import type {AddressInfo} from 'node:net'

import {ConfigError} from '../errors.js'

export interface MetricsListener {
  url: string
  close(): Promise<void>
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/

/**
 * A plain-HTTP GET /metrics for Prometheus, on loopback only: scrapers need no client
 * certificate, and nothing off the machine can read it (the mutual-TLS /metrics stays).
 */
export async function startMetricsListener(opts: {port: number; host?: string; text: () => Promise<string>; flag: string}): Promise<MetricsListener> {
  const host = opts.host ?? '127.0.0.1'
  if (!LOOPBACK.test(host)) throw new ConfigError('E_METRICS_HOST', `The plain-HTTP metrics listener binds to loopback only, not ${host}.`, {hint: 'Try this: scrape through a local Prometheus or agent on 127.0.0.1.'})
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') return void res.writeHead(404, {'content-type': 'text/plain'}).end('GET /metrics\n')
    opts
      .text()
      .then((text) => res.writeHead(200, {'content-type': 'text/plain; version=0.0.4; charset=utf-8'}).end(text))
      .catch(() => res.writeHead(500).end())
  })
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(opts.port, host, () => resolve())
    })
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new ConfigError('E_LISTEN', `Cannot listen on ${host}:${opts.port} for metrics: ${code === 'EADDRINUSE' ? 'the port is in use' : code}.`, {cause: error, hint: `Try this: another ${opts.flag} (0 turns it off).`})
  }
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
    url: `http://${host.includes(':') ? `[${host}]` : host}:${(server.address() as AddressInfo).port}/metrics`,
  }
}
