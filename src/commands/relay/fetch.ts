import {Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {relayClientFlags, relayClientFor} from '../../lib/relay/cli.js'
import type {FetchedMessage} from '../../lib/relay/service.js'

export default class RelayFetch extends MqCommand<typeof RelayFetch> {
  static description = `Fetch your waiting messages (the relay deletes them once delivered)

Texts print as MessageU does (From:, Content:, the text, -----<EOM>-----); with --json each message is one JSON line. Files are decrypted into --out and their paths printed; a symmetric key received is kept for that sender.`

  static examples = ['<%= config.bin %> relay fetch', '<%= config.bin %> relay fetch --out ./inbox --json']
  static flags = {
    ...relayClientFlags,
    out: Flags.string({default: '.', description: 'directory for received files'}),
  }

  async run(): Promise<void> {
    const client = await relayClientFor(this.home, this.mqConfig(), this.flags, this.logger)
    const json = this.jsonEnabled()
    const print = (m: FetchedMessage) => {
      if (json) {
        this.out(JSON.stringify(m))
        return
      }
      const content = m.error ?? (m.path ? `file saved to ${m.path} (${m.bytes} bytes)` : (m.text ?? ''))
      this.out(`From: ${m.from}\nContent:\n${content}\n-----<EOM>-----`)
    }
    try {
      const all = await client.fetch(this.flags.out, print)
      if (!json && all.length === 0) this.note('no waiting messages')
    } finally {
      client.close()
    }
  }
}
