import {Flags} from '@oclif/core'
import {join} from 'node:path'

import {MqCommand} from '../../lib/cli/base-command.js'
import {UnavailableError} from '../../lib/errors.js'
import {handshakeLimits} from '../../lib/net/pending.js'
import {RelayServer} from '../../lib/relay/server.js'
import {resolveRelayPort} from '../../lib/relay/service.js'
import {RelayStore} from '../../lib/relay/store.js'

export default class RelayStart extends MqCommand<typeof RelayStart> {
  static description = `Run the relay: a MessageU-compatible store-and-forward server for end-to-end encrypted messages and files

Speaks protocol versions 1 and 2 (MessageU, exact or 1024-padded framing) and mq's version 3. Port: --port, else relay.port, else ./myport.info, else 1357. Users and undelivered messages live in the store (store.url: SQLite $MQ_HOME/data/relay.db by default, or MySQL); file contents stream to $MQ_HOME/data/relay-files/. The relay never sees plaintext.`

  static examples = ['<%= config.bin %> relay start', '<%= config.bin %> relay start --port 1357 --host 0.0.0.0']

  static flags = {
    host: Flags.string({description: 'address to listen on [default: relay.host, 127.0.0.1]'}),
    tls: Flags.boolean({description: 'also listen with mutual TLS on relay.tls.port [default: relay.tls.enabled]'}),
    port: Flags.integer({description: 'port [default: relay.port, else ./myport.info, else 1357]', max: 65_535, min: 0}),
  }

  async run(): Promise<void> {
    const cfg = this.mqConfig()
    const log = this.logger.child('relay')
    const {port, source, warning} = resolveRelayPort(this.flags.port, cfg.relay.port)
    if (warning) log.warn(warning)
    const tlsOn = this.flags.tls ?? cfg.relay.tls.enabled
    // The PKI code (x509, forge) is loaded only when TLS is on: a plain relay stays small.
    const pki = tlsOn ? await import('../../lib/pki/index.js') : undefined
    let crlWatcher: import('../../lib/pki/index.js').CrlWatcher | undefined
    if (pki) {
      const created = await pki.CertificateAuthority.open(this.home, cfg.pki).ensureDevelopment({servers: [cfg.relay.tls.identity]})
      if (created.length > 0) log.info('created TLS material', {created: created.join(',')})
      await pki.ensureCrlAtStart(this.home, cfg.pki, log)
    }
    const tlsOptions = pki ? pki.serverTlsOptions(this.home, cfg.relay.tls.identity) : undefined
    const store = await RelayStore.open({dataDir: this.home.data, url: cfg.store.url})
    const {replayed, torn} = store.recovery
    if (replayed > 0) log.info('journal replayed: acknowledged messages moved into the store', {messages: replayed})
    for (const t of torn) {
      if (t.keptAt === undefined) log.warn('journal: ignored the end of a file, a record cut short by a crash while it was written', {bytes: t.bytes, file: t.file, offset: t.offset})
      else log.error('journal: a damaged record; the records after it were not replayed (a copy of the file is kept)', {bytes: t.bytes, file: t.file, kept: t.keptAt, offset: t.offset})
    }
    const server = new RelayServer({
      filesDir: join(this.home.data, 'relay-files'),
      host: this.flags.host ?? cfg.relay.host,
      idleTimeoutMs: cfg.relay.idle_timeout_ms,
      logger: log,
      maxFileBytes: cfg.relay.max_file_bytes,
      maxTextBytes: cfg.relay.max_text_bytes,
      port,
      store,
      tls: tlsOptions ? {handshakes: handshakeLimits(cfg.relay.tls), options: tlsOptions, port: cfg.relay.tls.port} : undefined,
    })
    try {
      await server.start()
    } catch (error) {
      await store.close()
      throw new UnavailableError('E_RELAY_LISTEN', `Cannot listen on ${this.flags.host ?? cfg.relay.host}:${port}: ${(error as Error).message}`, {
        hint: 'Try this: choose another --port, or stop whatever uses it.',
      })
    }
    if (pki) {
      // A republished CRL applies to new handshakes without a restart.
      crlWatcher = new pki.CrlWatcher(this.home)
      crlWatcher.on('change', () => server.updateTls(pki.serverTlsOptions(this.home, cfg.relay.tls.identity)))
      crlWatcher.start()
    }
    // handlers before "relay listening": a supervisor that signals as soon as it reads that line gets a clean shutdown
    const stopped = new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve())
      process.once('SIGTERM', () => resolve())
    })
    const counts = await store.counts()
    log.info('relay listening', {host: this.flags.host ?? cfg.relay.host, messages: counts.messages, port: server.port, port_source: source, store: store.label, tls_port: tlsOptions ? server.tlsPort : undefined, users: counts.users})
    await stopped
    log.info('relay stopping')
    crlWatcher?.stop()
    await server.stop()
    await store.close()
  }
}
