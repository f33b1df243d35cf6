import cluster from 'node:cluster'

import {Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import type {Logger} from '../../lib/log.js'
import {startProxy} from '../../lib/proxy/runtime.js'

export default class ProxyStart extends MqCommand<typeof ProxyStart> {
  static description = `Run the ingest proxy in the foreground: HTTPS with mutual TLS (our CA, CRL enforced and reloaded).
POST /api/v1/messages validates a message, rate limits per client identity (token bucket in Redis), registers it with the broker
(sealed in the records store) and enqueues a reference in the Redis stream for the workers. Also GET /api/v1/health and GET /metrics.`
  static examples = [
    '<%= config.bin %> proxy start',
    '<%= config.bin %> proxy start --port 8001 --rate 50 --burst 100',
    '<%= config.bin %> proxy start --api https://127.0.0.1:8443',
    "curl --cert alice.crt --key alice.key --cacert ca.crt -H 'Content-Type: application/json' -d '{\"sender_number\":\"+4915200000000\",\"message_body\":\"hi\"}' https://127.0.0.1:8001/api/v1/messages",
  ]
  static flags = {
    host: Flags.string({description: 'listen address [default: proxy.host, 127.0.0.1]'}),
    port: Flags.integer({description: 'listen port [default: proxy.port, 8001]', max: 65535, min: 0}),
    rate: Flags.integer({description: 'messages per second per client identity, 0 = unlimited [default: proxy.rate_per_sec]', min: 0}),
    burst: Flags.integer({description: 'token bucket size per client identity [default: proxy.rate_burst]', min: 1}),
    // --api, as on every other command (--broker is the messaging HOST:PORT elsewhere); --broker stays as a deprecated alias
    api: Flags.string({aliases: ['broker'], deprecateAliases: true, description: "the broker's HTTPS API URL [default: proxy.broker_api, else client.api]"}),
    redis: Flags.string({description: 'Redis URL [default: redis.url]'}),
    processes: Flags.integer({default: 1, description: 'proxy processes sharing the port (node:cluster), e.g. one per core', max: 64, min: 1}),
  }

  async run(): Promise<void> {
    const f = this.flags
    const config = this.mqConfig({
      proxy: {
        ...(f.host ? {host: f.host} : {}),
        ...(f.port === undefined ? {} : {port: f.port}),
        ...(f.rate === undefined ? {} : {rate_per_sec: f.rate}),
        ...(f.burst === undefined ? {} : {rate_burst: f.burst}),
        ...(f.api ? {broker_api: f.api} : {}),
      },
      ...(f.redis ? {redis: {url: f.redis}} : {}),
    })
    const logger = this.logger.child('proxy')
    if (f.processes > 1 && cluster.isPrimary) return this.supervise(f.processes, logger)
    const proxy = await startProxy(this.home, config, logger)
    if (cluster.isWorker) {
      process.send?.({ready: proxy.url})
      // the IPC channel to the primary keeps a worker alive: let go of it once closed
      return this.untilSignal(async () => {
        await proxy.close()
        cluster.worker?.disconnect()
      }, logger)
    }
    logger.info('proxy ready', {broker: config.proxy.broker_api ?? config.client.api, rate_per_sec: config.proxy.rate_per_sec, stream: `${config.redis.key_prefix}${config.proxy.stream}`, url: proxy.url})
    await this.untilSignal(() => proxy.close(), logger)
  }

  private untilSignal(close: () => Promise<void>, logger: Logger): Promise<void> {
    return new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        logger.info('shutting down', {signal: sig})
        close()
          .catch((error) => logger.error('shutdown failed', {error}))
          .finally(resolve)
      }
      process.once('SIGINT', () => stop('SIGINT'))
      process.once('SIGTERM', () => stop('SIGTERM'))
    })
  }

  /** Primary of --processes N: forks the proxies (same argv), reports ready once all are, forwards SIGTERM. */
  private async supervise(n: number, logger: Logger): Promise<void> {
    const workers = Array.from({length: n}, () => cluster.fork())
    let stopping = false
    const ready = await Promise.all(
      workers.map(
        (w) =>
          new Promise<string>((resolve, reject) => {
            w.once('message', (m: {ready?: string}) => (m?.ready ? resolve(m.ready) : undefined))
            w.once('exit', (code) => reject(new Error(`a proxy process exited (${code}) during start-up`)))
          }),
      ),
    )
    for (const w of workers) {
      w.removeAllListeners('exit')
      w.on('exit', (code, signal) => {
        if (!stopping) logger.error('a proxy process died', {code, pid: w.process.pid, signal})
      })
    }
    logger.info('proxy ready', {processes: n, url: ready[0]})
    await new Promise<void>((resolve) => {
      const stop = (sig: NodeJS.Signals) => {
        stopping = true
        logger.info('shutting down', {signal: sig})
        let left = workers.filter((w) => !w.isDead()).length
        if (left === 0) return resolve()
        for (const w of workers) {
          if (w.isDead()) continue
          w.once('exit', () => --left === 0 && resolve())
          w.process.kill(sig)
        }
      }
      process.once('SIGINT', () => stop('SIGINT'))
      process.once('SIGTERM', () => stop('SIGTERM'))
    })
  }
}
