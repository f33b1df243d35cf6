import {UnavailableError} from '../errors.js'
import type {MqConfig} from './schema.js'

/** What this home's config runs on a port, in words, for "that port is ..." errors; undefined when nothing. */
export function portRole(config: MqConfig, port: number): string | undefined {
  const roles: [number | undefined, string][] = [
    [config.broker.port, "the broker's messaging port (broker.port)"],
    [config.broker.api_port, "the broker's API port (broker.api_port)"],
    [config.broker.ciphermq.port, "the broker's CipherMQ listener (broker.ciphermq.port)"],
    [config.relay.port, "the relay's port (relay.port)"],
    [config.relay.tls.port, "the relay's TLS port (relay.tls.port)"],
    [config.proxy.port, "the ingest proxy's port (proxy.port)"],
    [config.worker.metrics_port, "the worker's metrics port (worker.metrics_port)"],
  ]
  return roles.find(([p]) => p === port)?.[1]
}

/**
 * "HOST:PORT: that port is the broker's API port (broker.api_port); the messaging port is 5700 (broker.port)",
 * exit 69, for a client that reached a service other than the one it wants. `seen` is what the client itself
 * noticed, used when this home's config runs nothing on that port.
 */
export function wrongServiceError(config: MqConfig, host: string, port: number, want: 'messaging' | 'api', seen: string): UnavailableError {
  const role = portRole(config, port)
  const wanted = want === 'messaging' ? {key: 'broker.port', port: config.broker.port} : {key: 'broker.api_port', port: config.broker.api_port}
  const what = role && port !== wanted.port ? `that port is ${role}` : seen
  const hint = want === 'messaging' ? `Try this: --broker ${host}:${wanted.port}` : `Try this: --api https://${host}:${wanted.port}`
  return new UnavailableError('E_WRONG_SERVICE', `${host}:${port}: ${what}; the ${want === 'messaging' ? 'messaging' : 'API'} port is ${wanted.port} (${wanted.key})`, {hint})
}
