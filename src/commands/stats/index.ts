import {withBroker} from '../../lib/broker/connect.js'
import type {BrokerStats} from '../../lib/broker/client.js'
import {brokerFlags} from '../../lib/broker/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'

function duration(ms: number): string {
  const s = Math.floor(ms / 1000)
  const d = Math.floor(s / 86_400)
  const h = Math.floor((s % 86_400) / 3600)
  const m = Math.floor((s % 3600) / 60)
  return `${d ? `${d}d ` : ''}${h ? `${h}h ` : ''}${m}m ${s % 60}s`
}

export default class Stats extends MqCommand<typeof Stats> {
  static description = 'Broker statistics: queues (depth, unacked, consumers, rates), exchanges, bindings, connections, message statuses, uptime'
  static examples = ['<%= config.bin %> stats', '<%= config.bin %> stats --json']
  static flags = {...brokerFlags}

  async run(): Promise<BrokerStats> {
    const st = await withBroker(this.home, this.mqConfig(), this.flags, (c) => c.stats())
    if (!this.jsonEnabled()) {
      const statuses = Object.entries(st.statuses).map(([k, v]) => `${k}=${v}`).join(' ') || 'none'
      this.out(
        [
          `uptime ${duration(st.uptimeMs)}   connections ${st.connections}   exchanges ${st.exchangeCount}   bindings ${st.bindingCount}`,
          `rates/s publish ${st.rates.publish}  deliver ${st.rates.deliver}  ack ${st.rates.ack}`,
          `totals published ${st.totals.published}  delivered ${st.totals.delivered}  acknowledged ${st.totals.acknowledged}  dead-lettered ${st.totals.deadLettered}  unroutable ${st.totals.unroutable}`,
          `statuses ${statuses}`,
          '',
          table(
            st.queues.map((q) => ({...q, durable: q.durable ? 'yes' : 'no'})),
            ['name', 'durable', 'messages', 'unacked', 'consumers', 'publishRate', 'deliverRate', 'ackRate'],
          ),
        ].join('\n'),
      )
    }
    return st
  }
}
