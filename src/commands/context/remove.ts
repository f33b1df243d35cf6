import {Args} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {checkContextName, contextsPath, readContexts, unknownContext, writeContexts} from '../../lib/config/contexts.js'

export default class ContextRemove extends MqCommand<typeof ContextRemove> {
  static args = {name: Args.string({description: 'context name', required: true})}
  static description = 'Remove a saved context (its home and certificates are not touched); removing the current one leaves none current'
  static examples = ['<%= config.bin %> context remove staging']

  async run(): Promise<{removed: string; current: string | null}> {
    const name = checkContextName(this.args.name)
    const file = contextsPath()
    const all = readContexts(file)
    if (!all.contexts[name]) throw unknownContext(name, file, Object.keys(all.contexts))
    delete all.contexts[name]
    if (all.current === name) all.current = undefined
    writeContexts(all, file)
    if (!this.jsonEnabled()) this.out(`context ${name} removed${all.current ? '' : ' (no current context now)'}`)
    return {current: all.current ?? null, removed: name}
  }
}
