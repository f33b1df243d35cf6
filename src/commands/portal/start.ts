import {Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {startPortal} from '../../lib/portal/runtime.js'

export default class PortalStart extends MqCommand<typeof PortalStart> {
  static description = `Run the operators' portal in the foreground: the web UI at / and the portal and admin APIs (JWT), over HTTPS
with a server certificate from our CA (issued on first start). Users see their client's messages; admins manage certificates,
users and the audit log and watch the broker's queues. It reads the records store (store.url) and the broker's API (mutual TLS,
identity portal). Stateless: several portals on one $MQ_HOME can run behind a load balancer.`
  static examples = [
    '<%= config.bin %> portal start',
    '<%= config.bin %> portal start --host 0.0.0.0 --port 8443',
    'printf %s "$PASSWORD" | <%= config.bin %> user create admin@example.com --role admin   # then open https://127.0.0.1:8080/',
  ]
  static flags = {
    host: Flags.string({description: 'listen address [default: portal.host, 127.0.0.1]'}),
    port: Flags.integer({description: 'listen port [default: portal.port, 8080]', max: 65535, min: 0}),
    api: Flags.string({description: "the broker's HTTPS API URL [default: portal.broker_api, else client.api]"}),
    'metrics-port': Flags.integer({description: 'plain-HTTP /metrics on 127.0.0.1 for Prometheus, 0 = off [default: portal.metrics_port]', max: 65535, min: 0}),
  }

  async run(): Promise<void> {
    const f = this.flags
    const config = this.mqConfig({
      portal: {
        ...(f.host ? {host: f.host} : {}),
        ...(f.port === undefined ? {} : {port: f.port}),
        ...(f.api ? {broker_api: f.api} : {}),
        ...(f['metrics-port'] === undefined ? {} : {metrics_port: f['metrics-port']}),
      },
    })
    const logger = this.logger.child('portal')
    const portal = await startPortal(this.home, config, logger)
    logger.info('portal ready', {broker: config.portal.broker_api ?? config.client.api, metrics: portal.metricsUrl, store: config.store.url, url: portal.url})
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        logger.info('shutting down', {signal: sig})
        portal
          .close()
          .catch((error) => logger.error('shutdown failed', {error}))
          .finally(resolve)
      }
      process.once('SIGINT', () => stop('SIGINT'))
      process.once('SIGTERM', () => stop('SIGTERM'))
    })
  }
}
