import {Args, Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {durationFlag} from '../../lib/cli/duration-flag.js'
import {UsageError} from '../../lib/errors.js'
import {ApiClient} from '../../lib/http/client.js'
import {clientTlsOptions} from '../../lib/pki/index.js'
import type {Accepted} from '../../lib/proxy/server.js'

export default class ProxySend extends MqCommand<typeof ProxySend> {
  static args = {
    url: Args.string({description: 'proxy URL, e.g. https://127.0.0.1:8001 ("-" = proxy.host:proxy.port from config)', required: true}),
    text: Args.string({description: 'message body (read from stdin when omitted)'}),
  }
  static description = `Send one message through the ingest proxy with your client certificate, like a send_message.py client script.
Prints the proxy's answer: message id, status "queued", client id, queue time and position.`
  static examples = [
    '<%= config.bin %> proxy send https://127.0.0.1:8001 --sender +4915200000000 "Test message" --identity alice',
    'echo "from stdin" | <%= config.bin %> proxy send - --sender +4915200000000 --idempotency-key order-42',
  ]
  static flags = {
    sender: Flags.string({description: 'sender phone number, E.164 (+4915200000000)', required: true}),
    metadata: Flags.string({description: 'JSON object attached to the message'}),
    'idempotency-key': Flags.string({description: 'makes retries of this send safe: the same key gives the same message'}),
    identity: Flags.string({description: 'client identity: $MQ_HOME/pki/issued/NAME.crt|.key [default: client.identity]', env: 'MQ_IDENTITY'}),
    timeout: durationFlag({description: 'how long to wait for the proxy: 500ms, 10s or 2m [default: client.timeout_ms, 10s]'}),
  }

  async run(): Promise<Accepted> {
    const f = this.flags
    const config = this.mqConfig()
    const url = this.args.url === '-' ? `https://${config.proxy.host}:${config.proxy.port}` : this.args.url
    if (!/^https:\/\//.test(url)) throw new UsageError('E_BAD_URL', `${JSON.stringify(url)} is not an https:// URL.`, {hint: 'Try this: mq proxy send https://127.0.0.1:8001 --sender +4915200000000 "text"'})
    let text = this.args.text
    if (text === undefined) {
      const chunks: Buffer[] = []
      for await (const c of process.stdin) chunks.push(c as Buffer)
      text = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
    }
    let metadata: unknown
    if (f.metadata !== undefined) {
      try {
        metadata = JSON.parse(f.metadata)
      } catch {
        throw new UsageError('E_BAD_METADATA', '--metadata is not valid JSON.', {hint: `Try this: --metadata '{"ref":"abc"}'`})
      }
    }
    const client = new ApiClient(url, clientTlsOptions(this.home, f.identity ?? config.client.identity), f.timeout ?? config.client.timeout_ms)
    try {
      const r = await client.call<Accepted>('POST', '/api/v1/messages', {message_body: text, sender_number: f.sender, ...(metadata === undefined ? {} : {metadata})}, f['idempotency-key'] ? {'idempotency-key': f['idempotency-key']} : {})
      if (!this.jsonEnabled()) this.out(`${r.message_id}  ${r.status}  client ${r.client_id}  position ${r.position}  at ${r.queued_at}`)
      return r
    } finally {
      client.close()
    }
  }
}
