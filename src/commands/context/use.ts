import {Args} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {checkContextName, contextsPath, readContexts, unknownContext, writeContexts} from '../../lib/config/contexts.js'

export default class ContextUse extends MqCommand<typeof ContextUse> {
  static args = {name: Args.string({description: 'context name', required: true})}
  static description = 'Make a context the current one: every command uses it unless --context, MQ_CONTEXT, MQ_* variables or flags say otherwise'
  static examples = ['<%= config.bin %> context use prod', '<%= config.bin %> context use local --json']

  async run(): Promise<{current: string; file: string}> {
    const name = checkContextName(this.args.name)
    const file = contextsPath()
    const all = readContexts(file)
    if (!all.contexts[name]) throw unknownContext(name, file, Object.keys(all.contexts))
    all.current = name
    writeContexts(all, file)
    if (!this.jsonEnabled()) this.out(`current context: ${name}`)
    return {current: name, file}
  }
}
