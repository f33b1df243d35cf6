import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {ConfigError, MqError, UsageError} from '../errors.js'
import {clientTlsOptions} from '../pki/index.js'
import {BrokerClient} from './client.js'

/** "host:port", "[v6]:port" or "port" -> parts; the default port is 5700. */
export function parseHostPort(value: string, defaultPort = 5700): {host: string; port: number} {
  const v = value.trim()
  let host = '127.0.0.1'
  let portText = String(defaultPort)
  const m6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(v)
  if (m6) {
    host = m6[1]
    portText = m6[2] ?? portText
  } else if (/^\d+$/.test(v)) {
    portText = v
  } else {
    const i = v.lastIndexOf(':')
    if (i >= 0 && v.indexOf(':') === i) {
      host = v.slice(0, i)
      portText = v.slice(i + 1)
    } else host = v
  }
  const port = Number(portText)
  if (!host || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new UsageError('E_BAD_ADDRESS', `broker address ${JSON.stringify(value)} is not HOST:PORT`, {hint: 'Try this: --broker 127.0.0.1:5700'})
  }
  return {host, port}
}

/**
 * What CLI commands use to reach the broker: --broker / MQ_BROKER / client.broker for the address,
 * --identity / MQ_IDENTITY / client.identity for the client certificate, --timeout / client.timeout_ms.
 * The broker is trusted through our CA alone (its certificate's name is not matched against HOST).
 */
export async function connectBroker(home: MqHome, config: MqConfig, opts: {broker?: string; identity?: string; timeoutMs?: number; batchConfirms?: boolean} = {}): Promise<BrokerClient> {
  let addr: {host: string; port: number}
  try {
    addr = parseHostPort(opts.broker ?? process.env.MQ_BROKER ?? config.client.broker)
  } catch (error) {
    // --broker is a usage error (2); MQ_BROKER / client.broker is a config error (78)
    // (oclif fills --broker from MQ_BROKER, so a value equal to the env var came from it)
    if ((opts.broker !== undefined && opts.broker !== process.env.MQ_BROKER) || !(error instanceof MqError)) throw error
    const where = process.env.MQ_BROKER === undefined ? 'client.broker' : 'MQ_BROKER'
    throw new ConfigError(error.code, `${where}: ${error.message}`, {hint: where === 'MQ_BROKER' ? 'Try this: export MQ_BROKER=127.0.0.1:5700' : 'Try this: client.broker: 127.0.0.1:5700 in the config file'})
  }
  const {host, port} = addr
  const identity = opts.identity ?? process.env.MQ_IDENTITY ?? config.client.identity
  return BrokerClient.connect({batchConfirms: opts.batchConfirms, host, port, timeoutMs: opts.timeoutMs ?? config.client.timeout_ms, tls: {...clientTlsOptions(home, identity), checkServerIdentity: () => undefined}})
}

/** Connects, runs fn, and always closes the connection. */
export async function withBroker<T>(home: MqHome, config: MqConfig, flags: {broker?: string; identity?: string; timeout?: number}, fn: (c: BrokerClient) => Promise<T>): Promise<T> {
  const c = await connectBroker(home, config, {broker: flags.broker, identity: flags.identity, timeoutMs: flags.timeout})
  try {
    return await fn(c)
  } finally {
    await c.close()
  }
}
