import type {MqHome} from '../config/home.js'
import type {MqConfig} from '../config/schema.js'
import {wrongServiceError} from '../config/ports.js'
import {ConfigError, MqError, TempFailError, UsageError} from '../errors.js'
import {type Logger, clientLogger} from '../log.js'
import {clientTlsOptions} from '../pki/index.js'
import {BrokerClient} from './client.js'

/**
 * A broker address: "HOST", "HOST:PORT", "[v6]:PORT", "PORT", or the URL forms "mq://HOST[:PORT]" and
 * "mqs://HOST[:PORT]" (both mutual TLS: there is no plain native port). A missing port is `defaultPort`,
 * the configured messaging port. Other schemes (https://, nats://, amqp://) are refused with a hint:
 * https:// is the API's, the others are other brokers'.
 */
export function parseHostPort(value: string, defaultPort = 5700): {host: string; port: number} {
  let v = value.trim()
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(v)
  if (scheme) {
    const s = scheme[1].toLowerCase()
    if (s !== 'mq' && s !== 'mqs') {
      const why = s === 'https' || s === 'http' ? `${s}:// is for the broker's HTTPS API (--api), not its messaging port` : `${s}:// is not an mq broker address`
      throw new UsageError('E_BAD_ADDRESS', `broker address ${JSON.stringify(value)}: ${why}`, {hint: `Try this: --broker HOST:${defaultPort} or --broker mqs://HOST:${defaultPort}`})
    }
    v = v.slice(scheme[0].length).replace(/\/+$/, '')
  }
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
  if (!host || /[/@?#\s]/.test(host) || !/^\d+$/.test(portText) || port < 1 || port > 65535) {
    throw new UsageError('E_BAD_ADDRESS', `broker address ${JSON.stringify(value)} is not HOST, HOST:PORT or mqs://HOST:PORT`, {hint: `Try this: --broker 127.0.0.1:${defaultPort}`})
  }
  return {host, port}
}

/** The messaging port clients of this config use when an address names no port. */
export function configuredBrokerPort(config: MqConfig): number {
  const m = /:(\d+)\/?$/.exec(config.client.broker)
  return m ? Number(m[1]) : config.broker.port
}

export {setClientLogger} from '../log.js'

/**
 * What CLI commands use to reach the broker: --broker / MQ_BROKER / client.broker for the address,
 * --identity / MQ_IDENTITY / client.identity for the client certificate, --timeout / client.timeout_ms.
 * The broker is trusted through our CA alone (its certificate's name is not matched against HOST).
 */
export async function connectBroker(home: MqHome, config: MqConfig, opts: {broker?: string; identity?: string; timeoutMs?: number; batchConfirms?: boolean; logger?: Logger} = {}): Promise<BrokerClient> {
  let addr: {host: string; port: number}
  try {
    addr = parseHostPort(opts.broker ?? process.env.MQ_BROKER ?? config.client.broker, configuredBrokerPort(config))
  } catch (error) {
    // --broker is a usage error (2); MQ_BROKER / client.broker is a config error (78)
    // (oclif fills --broker from MQ_BROKER, so a value equal to the env var came from it)
    if ((opts.broker !== undefined && opts.broker !== process.env.MQ_BROKER) || !(error instanceof MqError)) throw error
    const where = process.env.MQ_BROKER === undefined ? 'client.broker' : 'MQ_BROKER'
    throw new ConfigError(error.code, `${where}: ${error.message}`, {hint: where === 'MQ_BROKER' ? `Try this: export MQ_BROKER=127.0.0.1:${config.broker.port}` : `Try this: client.broker: 127.0.0.1:${config.broker.port} in the config file`})
  }
  const {host, port} = addr
  const identity = opts.identity ?? process.env.MQ_IDENTITY ?? config.client.identity
  const logger = opts.logger ?? clientLogger()
  logger?.debug('connecting to the broker', {host, identity, port, source: opts.broker === undefined ? (process.env.MQ_BROKER === undefined ? 'client.broker' : 'MQ_BROKER') : '--broker'})
  try {
    return await BrokerClient.connect({batchConfirms: opts.batchConfirms, host, port, timeoutMs: opts.timeoutMs ?? config.client.timeout_ms, tls: {...clientTlsOptions(home, identity), checkServerIdentity: () => undefined}})
  } catch (error) {
    logger?.debug('broker connection failed', {code: (error as MqError).code, host, port, reason: (error as Error).message})
    throw explainRefusal(error, config, host, port)
  }
}

/** Errors that depend on this home's config get its values: which service is on that port, which key caps connections. */
function explainRefusal(error: unknown, config: MqConfig, host: string, port: number): unknown {
  if (!(error instanceof MqError)) return error
  if (error.code === 'E_WRONG_SERVICE') return wrongServiceError(config, host, port, 'messaging', error.message)
  if (error.code === 'E_TOO_MANY_CONNECTIONS') {
    return new TempFailError('E_TOO_MANY_CONNECTIONS', `the broker at ${host}:${port} is full: ${error.message}`, {hint: 'Try this: retry later, close idle clients, or raise broker.max_connections in the broker\'s config'})
  }
  return error
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
