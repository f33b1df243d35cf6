import {Args} from '@oclif/core'

import {withBroker} from '../../lib/client/connect.js'
import {formatDefinitions, toFile} from '../../lib/client/definitions.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {writeFileAtomic} from '../../lib/util/fs.js'

export default class DefinitionsExport extends MqCommand<typeof DefinitionsExport> {
  static args = {file: Args.string({description: 'file to write (0600); stdout when omitted or -'})}
  static summary = "Export the broker's exchanges, queues, bindings and permission rules as JSON (admin only)."
  static description = `Export the broker's definitions as one JSON document, like RabbitMQ's definitions: exchanges (type, durable),
queues (durable, dead_letter, ttl_ms, max_length; dead_letter is null for none or the default NAME.dlq), bindings
(exchange, queue, routing_key) and the broker.permissions rules it runs with. Messages are not exported.
Sorted by name, so two exports of the same broker are the same bytes. mq definitions import applies such a file.`
  static examples = ['<%= config.bin %> definitions export defs.json', '<%= config.bin %> definitions export > defs.json', '<%= config.bin %> definitions export - | mq definitions import - --broker 10.0.0.7:5700', '<%= config.bin %> definitions export defs.json --json']
  static flags = {...brokerFlags}

  async run(): Promise<unknown> {
    const defs = toFile(await withBroker(this.home, this.mqConfig(), this.flags, (c) => c.definitions()))
    const text = formatDefinitions(defs)
    const counts = {bindings: defs.bindings.length, exchanges: defs.exchanges.length, permissions: defs.permissions.length, queues: defs.queues.length}
    // '-' is stdout, as for most Unix tools: a file named '-' is never what a user meant
    if (!this.args.file || this.args.file === '-') {
      // the document itself is the data, with or without --json
      process.stdout.write(text)
      this.exit(0)
    }
    writeFileAtomic(this.args.file, text, 0o600)
    if (!this.jsonEnabled()) this.out(`wrote ${this.args.file}: ${counts.exchanges} exchanges, ${counts.queues} queues, ${counts.bindings} bindings, ${counts.permissions} permission rules`)
    return {file: this.args.file, ...counts}
  }
}
