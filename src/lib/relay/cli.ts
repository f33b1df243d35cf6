import {Flags} from '@oclif/core'

import {durationFlag} from '../cli/duration-flag.js'
import type {MqHome} from '../config/home.js'
import {type MqConfig, clientHost} from '../config/schema.js'
import {UsageError} from '../errors.js'
import type {Logger} from '../log.js'
import type {Suite} from './crypto.js'
import {RelayKeyring} from './identity.js'
import {RelayClient, parseAddress, resolveRelayAddress} from './service.js'

export const COMPAT_HELP =
  'speak MessageU protocol v2 with its own crypto, to talk to existing MessageU clients. WEAK: RSA-1024, OAEP-SHA-1, AES-128-CBC with a zero IV and no integrity check. Chosen at register; other commands follow the identity'

/** Flags shared by the relay client commands. */
export const relayClientFlags = {
  compat: Flags.option({description: COMPAT_HELP, options: ['messageu'] as const})(),
  tls: Flags.boolean({description: 'connect with mutual TLS (the relay\'s relay.tls listener) using the --identity certificate from $MQ_HOME/pki'}),
  identity: Flags.string({description: 'TLS client identity for --tls: uses $MQ_HOME/pki/issued/NAME.crt|.key [default: client.identity, admin]', env: 'MQ_IDENTITY'}),
  timeout: durationFlag({description: 'how long to wait for the relay: 500ms, 10s or 2m [default: client.timeout_ms, 10s]'}),
  relay: Flags.string({description: 'relay HOST:PORT [default: MQ_RELAY, client.relay, ./server.info, the address used at register, relay.host with relay.port (relay.tls.port with --tls), 127.0.0.1:1357]'}),
}

export function suiteFromFlag(compat: string | undefined): Suite {
  return compat === 'messageu' ? 'messageu' : 'strong'
}

/** A relay client for a command: address from the flag/env/config/server.info, else the one registered with. */
export async function relayClientFor(home: MqHome, cfg: MqConfig, flags: {relay?: string; compat?: string; tls?: boolean; identity?: string; timeout?: number}, logger: Logger, opts: {register?: boolean} = {}): Promise<RelayClient> {
  const keyring = new RelayKeyring(home)
  let useTls = flags.tls
  let identity = flags.identity ?? cfg.client.identity
  let {address, source} = resolveRelayAddress(flags.relay, cfg.client.relay)
  if (!opts.register && keyring.exists()) {
    const me = keyring.identity()
    if (flags.compat && suiteFromFlag(flags.compat) !== me.suite) {
      throw new UsageError('E_RELAY_COMPAT_MISMATCH', `This home's relay identity ${me.name} uses the ${me.suite} suite, not --compat ${flags.compat}.`, {
        hint: 'Try this: drop --compat (the identity decides), or use another --home registered with --compat messageu.',
      })
    }
    // --identity / MQ_IDENTITY win; else the certificate this identity registered with
    if (flags.identity === undefined && process.env.MQ_IDENTITY === undefined && me.tlsIdentity) identity = me.tlsIdentity
    if (source === 'default' && me.relay) {
      address = parseAddress(me.relay, 'relay/me.json')
      useTls ??= me.tls
    }
  }
  if (source === 'default') {
    // no --relay, client.relay, server.info or registered address: the relay of this same home,
    // on its TLS port for --tls (the plain port would answer a TLS client with "wrong version number")
    const port = useTls ? cfg.relay.tls.port : cfg.relay.port
    if (port !== undefined) {
      address = {host: clientHost(cfg.relay.host).replace(/^\[|\]$/g, ''), port}
      source = useTls ? 'relay.tls.port' : 'relay.port'
    }
  }
  logger.debug('relay address', {host: address.host, port: address.port, source})
  return new RelayClient(home, address, {logger, timeoutMs: flags.timeout ?? cfg.client.timeout_ms, tls: useTls ? (await import('../pki/index.js')).clientTlsOptions(home, identity) : undefined, tlsIdentity: identity})
}
