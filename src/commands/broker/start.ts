import {existsSync} from 'node:fs'

import {Flags} from '@oclif/core'

import {startFullBroker} from '../../lib/app/broker.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {clientHost} from '../../lib/config/schema.js'
import {CertificateAuthority} from '../../lib/pki/index.js'

export default class BrokerStart extends MqCommand<typeof BrokerStart> {
  static description = `Run the broker in the foreground: native protocol over mutual TLS, HTTPS API, optional CipherMQ listener.
On first start with no CA in $MQ_HOME it creates a development CA, a "broker" server certificate and the "admin" identity: its client certificate and its end-to-end keys (so mq send --to NAME works without --from).`
  static examples = ['<%= config.bin %> broker start', '<%= config.bin %> broker start --port 5800 --api-port 5801', '<%= config.bin %> broker start --ciphermq --ciphermq-port 5702', '<%= config.bin %> broker start --cluster redis://127.0.0.1:6379']
  static flags = {
    host: Flags.string({description: 'messaging listen address [default: broker.host, 127.0.0.1]'}),
    port: Flags.integer({description: 'messaging port [default: broker.port, 5700; clients of this home follow it]', max: 65535, min: 0}),
    'api-port': Flags.integer({description: 'HTTPS API port [default: broker.api_port, 5701; clients of this home follow it]', max: 65535, min: 0}),
    'api-host': Flags.string({description: 'HTTPS API listen address [default: broker.api_host]'}),
    ciphermq: Flags.boolean({description: 'also serve the CipherMQ v1.0 text protocol (plain TCP) [default: broker.ciphermq.enabled]', allowNo: true}),
    'ciphermq-port': Flags.integer({description: 'CipherMQ listener port [default: broker.ciphermq.port, 5702]', max: 65535, min: 0}),
    cluster: Flags.string({description: 'join a cluster whose queues live on this Redis (redis://HOST:PORT) [default: broker.cluster.url; empty = standalone]'}),
    'cluster-name': Flags.string({description: 'the cluster to join on that Redis [default: broker.cluster.name]'}),
  }

  async run(): Promise<void> {
    const f = this.flags
    const config = this.mqConfig({
      broker: {
        ...(f.host ? {host: f.host} : {}),
        ...(f.port === undefined ? {} : {port: f.port}),
        ...(f['api-port'] === undefined ? {} : {api_port: f['api-port']}),
        ...(f['api-host'] ? {api_host: f['api-host']} : {}),
        ...(f.cluster === undefined && f['cluster-name'] === undefined ? {} : {cluster: {...(f.cluster === undefined ? {} : {url: f.cluster}), ...(f['cluster-name'] === undefined ? {} : {name: f['cluster-name']})}}),
        ...(f.ciphermq === undefined && f['ciphermq-port'] === undefined
          ? {}
          : {ciphermq: {...(f.ciphermq === undefined ? {} : {enabled: f.ciphermq}), ...(f['ciphermq-port'] === undefined ? {} : {port: f['ciphermq-port']})}}),
      },
    })
    const ca = CertificateAuthority.open(this.home, config.pki, {passphrase: process.env.MQ_CA_PASSPHRASE})
    const identity = config.broker.identity
    const firstRun = !existsSync(this.home.caCert)
    if (firstRun || !existsSync(this.home.issuedCert(identity))) {
      // RSA key generation takes seconds: say what is happening meanwhile (on a TTY)
      const spin = this.spinner(firstRun ? 'Creating a development CA, the broker certificate and the admin identity' : `Issuing the "${identity}" server certificate`).start()
      const created = await ca.ensureDevelopment({clients: firstRun ? ['admin'] : [], e2e: firstRun ? ['admin'] : [], servers: [identity]}).finally(() => spin.stop())
      const what = (c: string) => (c === 'ca' ? 'a development CA' : c === identity ? `the "${c}" server certificate` : `the "${c}" client identity`)
      const tlsMade = created.filter((c) => !c.startsWith('e2e:'))
      const e2eMade = created.filter((c) => c.startsWith('e2e:')).map((c) => `the "${c.slice(4)}" end-to-end identity`)
      if (created.length > 0) {
        const parts = [...(tlsMade.length > 0 ? [`${tlsMade.map((c) => what(c)).join(', ')} in ${this.home.pki}`] : []), ...(e2eMade.length > 0 ? [`${e2eMade.join(', ')} in ${this.home.keys}`] : [])]
        this.note(`Created ${parts.join('; ')}.`)
        if (firstRun) this.note(`Clients authenticate with ${this.home.issuedCert('admin')} (mq commands use it by default: --identity admin).`)
      }
    }
    const logger = this.logger.child('broker')
    const broker = await startFullBroker(this.home, config, logger)
    // handlers before "broker ready": a supervisor that signals as soon as it reads that line gets a clean shutdown
    const signalled = new Promise<string>((resolve) => {
      process.once('SIGINT', () => resolve('SIGINT'))
      process.once('SIGTERM', () => resolve('SIGTERM'))
    })
    const b = config.broker
    if (firstRun) {
      // what a client shell needs to reach this broker (ports from flags too); before "broker ready", which supervisors wait for
      const client = (h: string) => clientHost(h)
      this.note(`Clients in another shell:\n  export MQ_HOME=${this.home.root} MQ_BROKER=${client(b.host)}:${broker.ports.messaging} MQ_API=https://${client(b.api_host)}:${broker.ports.api}`)
    }
    logger.info('broker ready', {
      api: `https://${b.api_host}:${broker.ports.api}`,
      ciphermq: broker.ports.ciphermq === undefined ? undefined : `${b.ciphermq.host}:${broker.ports.ciphermq}`,
      cluster: broker.cluster ? `${b.cluster.name} on ${b.cluster.url.replace(/\/\/[^@/]*@/, '//***@')} as ${broker.cluster.nodeId}` : undefined,
      data: broker.store?.file,
      messaging: `${b.host}:${broker.ports.messaging}`,
    })
    const sig = await signalled
    logger.info('shutting down', {signal: sig})
    await broker.close().catch((error) => logger.error('shutdown failed', {error}))
  }
}
