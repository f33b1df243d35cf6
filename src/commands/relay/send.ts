import {Args, Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {relayClientFlags, relayClientFor} from '../../lib/relay/cli.js'

export default class RelaySend extends MqCommand<typeof RelaySend> {
  static args = {name: Args.string({description: 'recipient', required: true})}
  static description = 'Send NAME an end-to-end encrypted text (--text) or file (--file, streamed: any size up to the relay\'s limit)'
  static examples = ['<%= config.bin %> relay send bob --text "hello"', '<%= config.bin %> relay send bob --file ./report.pdf']
  static flags = {
    ...relayClientFlags,
    file: Flags.string({description: 'file to send', exactlyOne: ['text', 'file']}),
    text: Flags.string({description: 'text to send', exactlyOne: ['text', 'file']}),
  }

  async run(): Promise<Record<string, unknown>> {
    const client = await relayClientFor(this.home, this.mqConfig(), this.flags, this.logger)
    try {
      if (this.flags.file !== undefined) {
        const r = await client.sendFile(this.args.name, this.flags.file)
        if (!this.jsonEnabled()) this.out(`sent ${r.file} (${r.bytes} bytes) to ${r.to} (message ${r.messageId})`)
        return r
      }
      const r = await client.sendText(this.args.name, this.flags.text ?? '')
      if (!this.jsonEnabled()) this.out(`sent a text to ${r.to} (message ${r.messageId})`)
      return r
    } finally {
      client.close()
    }
  }
}
