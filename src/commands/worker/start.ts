import {Flags} from '@oclif/core'
import {durationFlag} from '../../lib/cli/duration-flag.js'

import {MqCommand} from '../../lib/cli/base-command.js'
import {startWorker} from '../../lib/worker/runtime.js'

export default class WorkerStart extends MqCommand<typeof WorkerStart> {
  static summary = 'Run an ingest worker: deliver messages from the Redis stream into the broker.'
  static description = `Run an ingest worker in the foreground: reads the Redis stream in a consumer group and delivers each message
through the broker's internal API (mutual TLS, "worker" identity) into the configured exchange. Failed attempts are retried after a
delay (fixed, or exponential with jitter) up to max attempts, then marked failed and moved to the dead-letter stream. Entries of a
crashed worker are reclaimed. SIGTERM finishes the messages in hand. Prometheus metrics on http://127.0.0.1:5709/metrics (worker.metrics_port).`
  static examples = ['<%= config.bin %> worker start', '<%= config.bin %> worker start --concurrency 16 --backoff exponential', '<%= config.bin %> worker start --max-attempts 5 --retry-delay 1s']
  static flags = {
    concurrency: Flags.integer({char: 'c', description: 'messages delivered at once [default: worker.concurrency, 4]', max: 1024, min: 1}),
    'retry-delay': durationFlag({description: 'wait before a failed message is tried again: 200ms, 30s, 5m [default: worker.retry_delay_ms, 30s]'}),
    backoff: Flags.option({description: 'retry delay policy [default: worker.backoff, fixed]', options: ['fixed', 'exponential'] as const})(),
    'max-attempts': Flags.integer({description: 'attempts before a message is failed and dead-lettered [default: worker.max_attempts, 10000]', min: 1}),
    exchange: Flags.string({description: 'exchange to deliver into [default: worker.exchange]'}),
    'routing-key': Flags.string({description: 'routing key [default: worker.routing_key]'}),
    name: Flags.string({description: 'consumer name in the group [default: HOST-PID]'}),
    'metrics-port': Flags.integer({description: 'port of /metrics, 0 = off [default: worker.metrics_port, 5709]', max: 65535, min: 0}),
    // --api, as on every other command (--broker is the messaging HOST:PORT elsewhere); --broker stays as a deprecated alias
    api: Flags.string({aliases: ['broker'], deprecateAliases: true, description: "the broker's HTTPS API URL [default: worker.broker_api, else client.api]"}),
    redis: Flags.string({description: 'Redis URL [default: redis.url]'}),
  }

  async run(): Promise<void> {
    const f = this.flags
    const config = this.mqConfig({
      worker: {
        ...(f['retry-delay'] === undefined ? {} : {retry_delay_ms: f['retry-delay']}),
        ...(f.backoff ? {backoff: f.backoff} : {}),
        ...(f['max-attempts'] === undefined ? {} : {max_attempts: f['max-attempts']}),
        ...(f.exchange ? {exchange: f.exchange} : {}),
        ...(f['routing-key'] ? {routing_key: f['routing-key']} : {}),
        ...(f['metrics-port'] === undefined ? {} : {metrics_port: f['metrics-port']}),
        ...(f.api ? {broker_api: f.api} : {}),
      },
      ...(f.redis ? {redis: {url: f.redis}} : {}),
    })
    const logger = this.logger.child('worker')
    const w = await startWorker(this.home, config, logger, {concurrency: f.concurrency, name: f.name})
    logger.info('worker ready', {concurrency: f.concurrency ?? config.worker.concurrency, consumer: w.worker.consumer, exchange: config.worker.exchange, metrics: w.metricsUrl, stream: `${config.redis.key_prefix}${config.proxy.stream}`})
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        logger.info('finishing messages in hand, then exiting', {in_hand: w.worker.busy, signal: sig})
        w.close()
          .catch((error) => logger.error('shutdown failed', {error}))
          .finally(resolve)
      }
      process.once('SIGINT', () => stop('SIGINT'))
      process.once('SIGTERM', () => stop('SIGTERM'))
    })
  }
}
