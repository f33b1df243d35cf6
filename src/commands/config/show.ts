import {Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {configRows} from '../../lib/config/origins.js'
import {redactConfig} from '../../lib/config/redact.js'

export default class ConfigShow extends MqCommand<typeof ConfigShow> {
  static summary = 'Print the effective configuration and where each value came from'
  static description = `Print the effective configuration and where each value came from: default (built in or config/mq.yaml),
file ($MQ_HOME/config.yaml or --config, with its line), env (the MQ_* variable) or flag. Precedence, lowest first:
defaults < config/mq.yaml < $MQ_HOME/config.yaml or --config < MQ_* env < flags. client.broker and client.api follow
broker.port and broker.api_port unless set.`
  static examples = ['<%= config.bin %> config show', 'MQ_BROKER_PORT=5800 <%= config.bin %> config show --json', '<%= config.bin %> config show --broker 10.0.0.5:5800']
  static flags = {
    api: Flags.string({description: 'show the effect of --api URL on client.api'}),
    broker: Flags.string({description: 'show the effect of --broker HOST:PORT on client.broker'}),
    identity: Flags.string({description: 'show the effect of --identity NAME on client.identity'}),
  }

  async run(): Promise<Record<string, unknown>> {
    const {api, broker, identity} = this.flags
    const config = this.mqConfig(api || broker || identity ? {client: {api, broker, identity}} : undefined)
    // store/redis URLs may carry passwords: never print them
    const shown = redactConfig(config)
    const out = {home: this.home.root, ...shown, origins: this.configOrigins}
    if (!this.jsonEnabled()) {
      const rows = configRows(shown, this.configOrigins)
      const width = Math.max(...rows.map((r) => r.key.length))
      const vw = Math.min(40, Math.max(...rows.map((r) => r.value.length)))
      this.out([`home ${this.home.root}`, ...rows.map((r) => `${r.key.padEnd(width)}  ${r.value.padEnd(vw)}  ${r.origin}`.trimEnd())].join('\n'))
    }
    return out
  }
}
