import {MqCommand} from '../../lib/cli/base-command.js'
import {redactConfig} from '../../lib/config/redact.js'
import {stringify} from 'yaml'

export default class ConfigShow extends MqCommand<typeof ConfigShow> {
  static description = 'Print the effective configuration (defaults < config/mq.yaml < $MQ_HOME/config.yaml or --config < MQ_* env < flags)'
  static examples = ['<%= config.bin %> config show', 'MQ_BROKER_PORT=5800 <%= config.bin %> config show --json']

  async run(): Promise<Record<string, unknown>> {
    const config = this.mqConfig()
    // store/redis URLs may carry passwords: never print them
    const out = {home: this.home.root, ...redactConfig(config)}
    if (!this.jsonEnabled()) this.out(stringify(out))
    return out
  }
}
