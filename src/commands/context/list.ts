import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'
import {type MqContext, contextsPath, readContexts} from '../../lib/config/contexts.js'

export default class ContextList extends MqCommand<typeof ContextList> {
  static description = 'List the saved contexts; * marks the current one (--context or MQ_CONTEXT override it per command)'
  static examples = ['<%= config.bin %> context list', '<%= config.bin %> context list --json']

  async run(): Promise<{file: string; current: string | null; contexts: (MqContext & {name: string; current: boolean})[]}> {
    const file = contextsPath()
    const all = readContexts(file)
    const contexts = Object.entries(all.contexts).map(([name, c]) => ({name, current: name === all.current, ...c}))
    if (!this.jsonEnabled()) {
      if (contexts.length === 0) this.note(`no contexts in ${file}; add one: mq context add NAME --broker HOST:PORT --identity NAME`)
      else this.out(table(contexts.map((c) => ({' ': c.current ? '*' : '', name: c.name, broker: c.broker ?? '', api: c.api ?? '', identity: c.identity ?? '', home: c.home ?? '', description: c.description ?? ''})), [' ', 'name', 'broker', 'api', 'identity', 'home', 'description']))
    }
    return {contexts, current: all.current ?? null, file}
  }
}
