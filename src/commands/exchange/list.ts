import {withBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'

export default class ExchangeList extends MqCommand<typeof ExchangeList> {
  static description = 'List exchanges and their bindings'
  static examples = ['<%= config.bin %> exchange list', '<%= config.bin %> exchange list --json']
  static flags = {...brokerFlags}

  async run(): Promise<Awaited<ReturnType<import('../../lib/client/client.js').BrokerClient['listExchanges']>>> {
    const r = await withBroker(this.home, this.mqConfig(), this.flags, (c) => c.listExchanges())
    // stdout carries data only: an empty list prints nothing there
    if (!this.jsonEnabled() && r.exchanges.length === 0) this.note('no exchanges')
    else if (!this.jsonEnabled()) {
      this.out(table(r.exchanges.map((e) => ({...e, durable: e.durable ? 'yes' : 'no'})), ['name', 'type', 'durable', 'bindings']))
      if (r.bindings.length > 0) this.out('\n' + table(r.bindings, ['exchange', 'routingKey', 'queue']))
    }
    return r
  }
}
