import {Args, Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {parseHostPort} from '../../lib/client/connect.js'
import {type MqContext, absoluteHome, checkContextName, contextsPath, readContexts, writeContexts} from '../../lib/config/contexts.js'
import {MqError, UsageError} from '../../lib/errors.js'
import {checkName} from '../../lib/util/names.js'

export default class ContextAdd extends MqCommand<typeof ContextAdd> {
  static args = {name: Args.string({description: 'context name', required: true})}
  static summary = 'Save a named context: broker address, API URL, identity and home, as nats context add.'
  static description = `Save a named context in ~/.config/mq/contexts.yaml ($XDG_CONFIG_HOME/mq/contexts.yaml). A context in use (mq context use
NAME, --context NAME or MQ_CONTEXT) sets client.broker, client.api and client.identity, and the home: above the home's
config file, below MQ_* environment variables and flags. The first context added becomes the current one.`
  static examples = [
    '<%= config.bin %> context add prod --broker mq.example.com:5700 --api https://mq.example.com:5701 --identity ops --home ~/.mq-prod',
    '<%= config.bin %> context add local --home ~/.mq --use',
    '<%= config.bin %> context add prod --identity admin --force',
  ]
  static flags = {
    broker: Flags.string({description: 'broker address: HOST, HOST:PORT or mqs://HOST:PORT'}),
    api: Flags.string({description: "the broker's HTTPS API, https://HOST:PORT"}),
    identity: Flags.string({description: 'client identity (pki/issued/NAME.crt|.key of the home)'}),
    // here --home is the context's home (its CA, certificates and config.yaml); this command itself uses no home
    home: Flags.string({description: 'the home directory this context uses: its certificates and config.yaml', helpGroup: 'CONTEXT'}),
    description: Flags.string({description: 'a note shown by mq context list'}),
    use: Flags.boolean({description: 'make it the current context'}),
    force: Flags.boolean({description: 'replace a context of that name'}),
  }

  async run(): Promise<{name: string; file: string; current: boolean} & MqContext> {
    const f = this.flags
    const name = checkContextName(this.args.name)
    if (f.broker) parseHostPort(f.broker)
    if (f.api && !/^https:\/\/[^/\s]+/.test(f.api)) throw new UsageError('E_BAD_ADDRESS', `--api ${JSON.stringify(f.api)} is not an https:// URL`, {hint: 'Try this: --api https://HOST:5701'})
    if (f.identity) checkName(f.identity)
    const ctx: MqContext = {
      ...(f.broker ? {broker: f.broker} : {}),
      ...(f.api ? {api: f.api} : {}),
      ...(f.identity ? {identity: f.identity} : {}),
      ...(f.home ? {home: absoluteHome(f.home)} : {}),
      ...(f.description ? {description: f.description} : {}),
    }
    if (Object.keys(ctx).filter((k) => k !== 'description').length === 0) throw new UsageError('E_USAGE', 'a context needs at least one of --broker, --api, --identity, --home', {hint: `Try this: mq context add ${name} --broker HOST:PORT --identity NAME`})
    const file = contextsPath()
    const all = readContexts(file)
    if (all.contexts[name] && !f.force) throw new MqError('E_EXISTS', `a context named ${name} already exists in ${file}`, {hint: `Try this: mq context add ${name} ... --force to replace it, or mq context remove ${name}`})
    all.contexts[name] = ctx
    const current = f.use || all.current === undefined || all.current === name
    if (current) all.current = name
    writeContexts(all, file)
    if (!this.jsonEnabled()) this.out(`context ${name} saved in ${file}${current ? ' (current)' : `; use it with mq context use ${name} or --context ${name}`}`)
    return {current, file, name, ...ctx}
  }
}
