import {apiFlags, withAdminApi} from '../../lib/admin/client.js'
import {withBroker} from '../../lib/client/connect.js'
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
(--json: under "records", null when it does not answer)`
  static examples = ['<%= config.bin %> stats', '<%= config.bin %> stats --json']
  static flags = {...brokerFlags, api: apiFlags.api}

  async run(): Promise<BrokerStats & {records: RecordsStats | null}> {
    const config = this.mqConfig()
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
}
