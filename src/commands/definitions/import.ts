import {Args} from '@oclif/core'
import {stringify} from 'yaml'

import {withBroker} from '../../lib/client/connect.js'
import {type ImportReport, importDefinitions, readDefinitions} from '../../lib/client/definitions.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'

export default class DefinitionsImport extends MqCommand<typeof DefinitionsImport> {
  static args = {file: Args.string({description: 'a file written by mq definitions export; - reads standard input', required: true})}
  static summary = 'Declare the exchanges, queues and bindings of a definitions file (admin only; idempotent).'
  static description = `Apply a file written by mq definitions export: missing exchanges, queues and bindings are declared, existing ones
are left alone, so importing twice changes nothing. Before anything changes, the whole file is checked against the
broker: an exchange of another type, a queue with other settings, or a binding to something neither has is
E_DEFINITIONS_CONFLICT (exit 1), all conflicts listed, nothing changed. A malformed file is E_BAD_DEFINITIONS (exit 65).
Permission rules live in the broker's config (broker.permissions), not in the broker: when the file's differ, the
import says so on stderr and prints the YAML to put in the broker's config.yaml ("permissions_match": false).`
  static examples = ['<%= config.bin %> definitions import defs.json', '<%= config.bin %> definitions import defs.json --broker 10.0.0.7:5700 --json', 'mq definitions export - | <%= config.bin %> definitions import - --broker 10.0.0.7:5700']
  static flags = {...brokerFlags}

  async run(): Promise<ImportReport & {file: string}> {
    const file = this.args.file
    const defs = readDefinitions(file)
    const r = await withBroker(this.home, this.mqConfig(), this.flags, (c) => importDefinitions(c, defs, file))
    if (!this.jsonEnabled()) {
      const line = (what: string, x: {created: number; unchanged: number}) => `${what} ${x.created} created, ${x.unchanged} unchanged`
      this.out(`imported ${file}: ${line('exchanges', r.exchanges)}; ${line('queues', r.queues)}; ${line('bindings', r.bindings)}`)
    }
    if (!r.permissionsMatch) {
      this.note(`warning: the permission rules in ${file} differ from the broker's broker.permissions, which only its config file sets.`)
      this.note(`To use them, put this in the broker's config.yaml and restart it:\n${stringify({broker: {permissions: r.permissions}}).trimEnd()}`)
    }
    return {file, ...r}
  }
}
