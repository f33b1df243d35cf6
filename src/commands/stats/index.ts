import {apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {Flags} from '@oclif/core'

import {connectBroker, withBroker} from '../../lib/client/connect.js'
import {watchStats} from '../../lib/client/stats-watch.js'
import {durationFlag} from '../../lib/cli/duration-flag.js'
import type {BrokerStats} from '../../lib/client/client.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'
import {errorText} from '../../lib/errors.js'
import type {RecordsStats} from '../../lib/records/store.js'

const n = (x: number) => x.toLocaleString('en-US')
const mib = (b: number) => (b ? `${(b / 1048576).toFixed(1)} MiB` : 'none')

function duration(ms: number): string {
  const s = Math.floor(ms / 1000)
  const d = Math.floor(s / 86_400)
  const h = Math.floor((s % 86_400) / 3600)
  const m = Math.floor((s % 3600) / 60)
  return `${d ? `${d}d ` : ''}${h ? `${h}h ` : ''}${m}m ${s % 60}s`
}

export default class Stats extends MqCommand<typeof Stats> {
  static summary = 'Broker statistics: queues, exchanges, connections, statuses, uptime, and the records figures.'
  static description = `Broker statistics: queues (depth, unacked, consumers, rates), exchanges, bindings, connections, message statuses, uptime;
plus the records store's figures (messages total/queued/delivered/failed, last 24 h and 7 days; clients) when the broker's records API answers
(--json: under "records", null when it does not answer).

--watch: a live view of the broker's figures every --interval, like nats top (the records figures are left out).
On a terminal the screen is redrawn in place, busiest queues first; otherwise one line per interval is written,
or with --json one JSON object per line (the --json figures plus "time"). Ctrl-C stops it, exit 0.`
  static examples = ['<%= config.bin %> stats', '<%= config.bin %> stats --json', '<%= config.bin %> stats --watch', '<%= config.bin %> stats --watch --interval 5s --json >> stats.jsonl']
  static flags = {
    ...brokerFlags,
    api: apiFlags.api,
    watch: Flags.boolean({char: 'w', description: 'keep showing the figures every --interval until Ctrl-C'}),
    interval: durationFlag({default: 2000, description: 'how often --watch reads the figures: 500ms, 2s, 1m', helpValue: '<duration>'}),
  }

  async run(): Promise<BrokerStats & {records: RecordsStats | null}> {
    const config = this.mqConfig()
    if (this.flags.watch) return this.watch(config)
    // the engine figures come over the native protocol, the records figures over the HTTPS API (admin role)
    const [st, records] = await Promise.all([
      withBroker(this.home, config, this.flags, (c) => c.stats()),
      withAdminApi(this.home, config, this.flags, (a) => a.stats()).catch((error) => {
        this.logger.debug('records figures unavailable', {error: errorText(error)})
        return null
      }),
    ])
    if (!this.jsonEnabled()) {
      const statuses = Object.entries(st.statuses).map(([k, v]) => `${k}=${v}`).join(' ') || 'none'
      this.out(
        [
          `uptime ${duration(st.uptimeMs)}   connections ${st.connections}   exchanges ${st.exchangeCount}   bindings ${st.bindingCount}`,
          `rates/s publish ${st.rates.publish}  deliver ${st.rates.deliver}  ack ${st.rates.ack}`,
          `totals published ${st.totals.published}  delivered ${st.totals.delivered}  acknowledged ${st.totals.acknowledged}  dead-lettered ${st.totals.deadLettered}  unroutable ${st.totals.unroutable}`,
          `statuses ${statuses}`,
          ...(st.cluster ? [`cluster ${st.cluster.name}   nodes alive ${st.cluster.nodes.filter((x) => x.alive).length}/${st.cluster.nodes.length}   (figures are cluster-wide; mq cluster status lists the nodes)`] : []),
          ...(st.memory ? [`memory rss ${mib(st.memory.rss)}  high watermark ${mib(st.memory.highWatermark)}${st.memory.alarm ? '  ALARM: above the high watermark, publishers are paused until memory use falls below it' : ''}`] : []),
          // no queues: no table (and no "(none)") on stdout, a note on stderr below
          ...(st.queues.length > 0
            ? ['', table(
                st.queues.map((q) => ({...q, diskBytes: q.diskBytes ?? 0, durable: q.durable ? 'yes' : 'no', memoryBytes: q.memoryBytes ?? 0})),
                ['name', 'durable', 'messages', 'memoryBytes', 'diskBytes', 'unacked', 'consumers', 'publishRate', 'deliverRate', 'ackRate'],
              )]
            : []),
          ...(records
            ? ['', [
                `records messages total ${n(records.messages.total)}  queued ${n(records.messages.queued + records.messages.processing)}  delivered ${n(records.messages.delivered)}  failed ${n(records.messages.failed)}  last 24h ${n(records.messages.last_24h)}  last 7d ${n(records.messages.last_7d)}`,
                `records clients total ${n(records.clients.total)}  active ${n(records.clients.active)}  revoked ${n(records.clients.revoked)}`,
              ].join('\n')]
            : []),
        ].join('\n'),
      )
      if (st.queues.length === 0) this.note('no queues')
      if (!records) this.note("records figures unavailable (the broker's HTTPS API did not answer); try: mq stats records")
    }
    return {...st, records}
  }

  private async watch(config: ReturnType<Stats['mqConfig']>): Promise<never> {
    const f = this.flags
    if (f.interval < 100) this.error('--interval must be at least 100ms', {exit: 2})
    const c = await connectBroker(this.home, config, {broker: f.broker, identity: f.identity, timeoutMs: f.timeout})
    const tty = process.stdout.isTTY === true && !this.jsonEnabled()
    let stop!: () => void
    const stopped = new Promise<void>((r) => (stop = r))
    // Ctrl-C ends the watch, not the process mid-write: exit 0 once the connection is closed
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    try {
      await watchStats(c, {
        intervalMs: f.interval,
        mode: tty ? 'screen' : this.jsonEnabled() ? 'json' : 'lines',
        size: () => ({columns: process.stdout.columns ?? 120, rows: process.stdout.rows ?? 40}),
        stop: stopped,
        target: f.broker ?? process.env.MQ_BROKER ?? config.client.broker,
        write: (t) => process.stdout.write(t),
      })
    } finally {
      await c.close()
    }
    this.exit(0)
  }
}
