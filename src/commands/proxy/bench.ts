import {Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {MqError} from '../../lib/errors.js'
import {type PipelineBenchResult, benchPipeline} from '../../lib/proxy/bench.js'

export default class ProxyBench extends MqCommand<typeof ProxyBench> {
  static summary = 'Benchmark the ingest pipeline (proxy ingest and worker delivery) against a bare mutual-TLS baseline.'
  static description = `Benchmark the ingest pipeline on this machine: spawns a private broker, proxy and worker (temp home, free ports,
unique Redis key prefix), measures proxy ingest requests/s with p50/p99 over keep-alive mutual TLS, then worker delivery messages/s.
The baseline in the same run is a bare mutual-TLS HTTPS server with the proxy's TLS settings that reads each request body and
answers 202 with a body the size of the proxy's answer, doing nothing else.`
  static examples = ['<%= config.bin %> proxy bench', '<%= config.bin %> proxy bench --seconds 10 --connections 64 --json', '<%= config.bin %> proxy bench --store mysql://root@127.0.0.1:3306/mqbench']
  static flags = {
    seconds: Flags.integer({default: 10, description: 'duration of each load phase', min: 1}),
    connections: Flags.integer({default: 64, description: 'keep-alive connections of the load generator', min: 1}),
    // 128: two broker calls of 64 in flight (worker callSize), so one is read and sent while the other waits for the broker's commit
    concurrency: Flags.integer({default: 128, description: 'worker concurrency for the delivery phase (two calls of 64 in flight)', min: 1}),
    store: Flags.string({description: 'records store of the private broker [default: sqlite in the temp home]'}),
    redis: Flags.string({description: 'Redis URL [default: redis.url]'}),
    port: Flags.integer({default: 0, description: 'port of the private proxy (0 = a free port)', max: 65_535, min: 0}),
    'broker-port': Flags.integer({default: 0, description: 'messaging port of the private broker (0 = a free port)', max: 65_535, min: 0}),
    'api-port': Flags.integer({default: 0, description: 'API port of the private broker (0 = a free port)', max: 65_535, min: 0}),
    processes: Flags.integer({default: 1, description: 'proxy processes (mq proxy start --processes)', min: 1}),
  }

  async run(): Promise<PipelineBenchResult> {
    const config = this.mqConfig()
    const r = await benchPipeline({
      concurrency: this.flags.concurrency,
      connections: this.flags.connections,
      log: (s) => this.note(s),
      ports: {api: this.flags['api-port'], broker: this.flags['broker-port'], proxy: this.flags.port},
      processes: this.flags.processes,
      redisUrl: this.flags.redis ?? config.redis.url,
      seconds: this.flags.seconds,
      storeUrl: this.flags.store,
    })
    if (!this.jsonEnabled()) {
      this.out(
        [
          `baseline (${r.baseline.name}): ${r.baseline.perSecond} req/s, p50 ${r.baseline.p50ms} ms, p99 ${r.baseline.p99ms} ms, errors ${r.baseline.errors}` +
            (r.baseline.cpu_us_per_request.server === null ? '' : `, CPU per request: server ${r.baseline.cpu_us_per_request.server} us, load generator ${r.baseline.cpu_us_per_request.loadgen} us`),
          `proxy ingest (${r.proxy.processes} process${r.proxy.processes > 1 ? 'es' : ''}, ${r.store}): ${r.proxy.perSecond} accepted/s, p50 ${r.proxy.p50ms} ms, p99 ${r.proxy.p99ms} ms, errors ${r.proxy.errors}` +
            (r.proxy.cpu_us_per_request.proxy === null ? '' : `, CPU per request: proxy ${r.proxy.cpu_us_per_request.proxy} us, broker ${r.proxy.cpu_us_per_request.broker} us, load generator ${r.proxy.cpu_us_per_request.loadgen} us`),
          `  ratio: ${r.ratio === null ? 'no ratio (errors)' : `${r.ratio}x the baseline (target >= ${r.targets.ratio}x: ${r.ratio >= r.targets.ratio ? 'met' : 'not met'})`}` +
            (r.cpu_bound_ratio === null ? '' : `; by CPU per request ${r.cpu_bound_ratio}x (what a run with every core busy reaches; throughput swings with other load, CPU per request much less)`),
          `worker delivery: ${r.worker.messages} messages in ${r.worker.seconds} s = ${r.worker.perSecond} msg/s (concurrency ${r.worker.concurrency})` +
            (r.worker.cpu_us_per_message.worker === null ? '' : `, CPU per message: worker ${r.worker.cpu_us_per_message.worker} us, broker ${r.worker.cpu_us_per_message.broker} us`),
          `  vs proxy: ${r.worker.vs_proxy === null ? 'no ratio (proxy errors)' : `${r.worker.vs_proxy}x the proxy's accepted rate (target >= ${r.targets.worker_vs_proxy}x: ${r.worker.vs_proxy >= r.targets.worker_vs_proxy ? 'met' : 'not met'})`}`,
        ].join('\n'),
      )
    }
    if (r.ratio === null) {
      if (this.jsonEnabled()) this.out(JSON.stringify(r))
      throw new MqError('E_BENCH_ERRORS', `No ratio: the baseline had ${r.baseline.errors} error(s) and the proxy ${r.proxy.errors}; a ratio counts only when both finish with 0 errors.`, {
        hint: 'Try this: look at the server logs above, lower --connections, and run the bench again.',
      })
    }
    return r
  }
}
