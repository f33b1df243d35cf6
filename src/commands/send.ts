import {Args, Flags} from '@oclif/core'
import {readFileSync} from 'node:fs'

import {connectBroker} from '../lib/client/connect.js'
import {brokerFlags} from '../lib/client/flags.js'
import {MqCommand} from '../lib/cli/base-command.js'
import {IdentityResolver, MessageSender, type SendFormat, checkIdentityName, loadOwnIdentity, parseHeaders, publishInOrder, sendFailure, splitLines} from '../lib/crypto/index.js'
import {DataError, MqError, UsageError, errorText} from '../lib/errors.js'

export default class Send extends MqCommand<typeof Send> {
  static args = {
    // ignoreStdin: oclif would otherwise fill a missing argument from stdin as text, with a 10 ms timeout
    payload: Args.string({description: 'message payload; omit it to use --file or standard input (read fully, binary-safe)', ignoreStdin: true, required: false}),
  }

  static description = `Send a message, end-to-end encrypted and signed unless --plain

The payload comes from the argument, --file, or standard input. For every --to NAME the sender looks up NAME's certified keys (local keys/, keys/cache/, then the broker's key directory) and checks them against the CA and CRL before encrypting; a revoked or uncertified key is refused. Each message waits for the broker's confirm; the exit status is 0 only when every message was confirmed. See docs/envelope.md for the envelope format.`

  static examples = [
    '<%= config.bin %> send --queue orders --to bob "hello bob"',
    '<%= config.bin %> send --queue orders --to bob --to carol --file report.pdf',
    'tar c dir | <%= config.bin %> send --queue backups --to bob',
    'cat events.log | <%= config.bin %> send --exchange events --routing-key app.log --to ops --lines --json',
    '<%= config.bin %> send --queue legacy --to bob --format ciphermq "for a CipherMQ receiver"',
    '<%= config.bin %> send --queue public --plain "not secret"',
  ]

  static flags = {
    ...brokerFlags,
    file: Flags.string({char: 'f', description: 'read the payload from this file'}),
    lines: Flags.boolean({description: 'send one message per input line (without its newline)'}),
    to: Flags.string({char: 't', description: 'recipient identity (repeatable)', multiple: true, multipleNonGreedy: true}),
    plain: Flags.boolean({description: 'send unencrypted and unsigned (must be explicit)', exclusive: ['to']}),
    from: Flags.string({description: 'end-to-end identity that signs the message [default: --identity]'}),
    queue: Flags.string({char: 'q', description: 'publish straight to this queue (default exchange)', exclusive: ['exchange']}),
    exchange: Flags.string({char: 'e', description: 'publish to this exchange (with --routing-key)'}),
    'routing-key': Flags.string({char: 'k', description: 'routing key for --exchange', dependsOn: ['exchange']}),
    header: Flags.string({char: 'H', description: 'header KEY:VALUE (repeatable); authenticated in the envelope but readable by the broker', multiple: true, multipleNonGreedy: true}),
    format: Flags.option({description: 'wire format of an encrypted message', options: ['native', 'ciphermq'] as const, default: 'native'})(),
    'content-type': Flags.string({description: 'content type recorded in the envelope [default: application/octet-stream]'}),
  }

  async run(): Promise<void> {
    const config = this.mqConfig()
    const f = this.flags
    if (!f.queue && !f.exchange) throw new UsageError('E_NO_DESTINATION', 'Say where to send: --queue Q, or --exchange E --routing-key K.', {hint: 'Try this: mq send --queue orders --to bob "hello"'})
    const exchange = f.queue ? '' : f.exchange!
    const routingKey = f.queue ?? f['routing-key'] ?? ''
    const recipients = f.to ?? []
    if (!f.plain && recipients.length === 0) {
      throw new UsageError('E_NO_RECIPIENTS', 'Name at least one recipient with --to NAME, or pass --plain to send unencrypted.', {hint: 'Try this: mq send --queue orders --to bob "hello"'})
    }
    for (const r of recipients) checkIdentityName(r)
    if (f.plain && f.format !== 'native') throw new UsageError('E_FLAGS', '--plain sends unencrypted; it cannot be combined with --format.', {hint: 'Try this: drop --format, or drop --plain and add --to NAME.'})
    const format: SendFormat = f.plain ? 'plain' : f.format
    const headers = parseHeaders(f.header)

    const input = await this.readPayload()
    const payloads = f.lines ? splitLines(input) : [input]
    if (payloads.length === 0) throw new DataError('E_EMPTY_INPUT', 'The input has no lines to send.', {hint: 'Try this: drop --lines to send an empty message, or check the input.'})

    const tlsIdentity = f.identity ?? process.env.MQ_IDENTITY ?? config.client.identity
    const senderName = f.from ?? tlsIdentity
    // the signing key is needed before anything is published
    const sender = format === 'native' ? loadOwnIdentity(this.home, checkIdentityName(senderName), '--from', {forSigning: true}) : undefined
    const client = await connectBroker(this.home, config, {broker: f.broker, identity: tlsIdentity, timeoutMs: f.timeout})
    try {
      const resolver = new IdentityResolver(this.home, client)
      // every key is verified (CA, CRL, name) before a single message goes out
      const keys = []
      for (const name of recipients) keys.push(await resolver.resolve(name))
      const messenger = new MessageSender(client, {
        contentType: f['content-type'],
        exchange,
        format,
        grantEvery: config.e2e.grant_every,
        headers,
        maxAgeMs: config.e2e.key_max_age_ms,
        maxMessages: config.e2e.key_max_messages,
        recipients: keys,
        routingKey,
        sender: sender ? {name: sender.name, signPrivateKey: sender.signPrivateKey} : undefined,
        window: config.e2e.publish_window,
      })
      const {confirmed, failed, total} = await publishInOrder(messenger, payloads, (o) => {
        if ('result' in o) this.out(this.jsonEnabled() ? JSON.stringify(o.result) : o.result.message_id)
        // scripts learn which message was not confirmed; stdout keeps one line per message
        else if (this.jsonEnabled()) this.out(JSON.stringify({error: o.error instanceof MqError ? o.error.toJSON() : {code: 'E_SEND_FAILED', message: errorText(o.error)}, message_id: o.messageId}))
      })
      if (failed) throw sendFailure(failed, confirmed, total, f.queue)
      if (!this.jsonEnabled()) {
        const what = format === 'plain' ? 'unencrypted' : `encrypted for ${recipients.join(', ')}${format === 'ciphermq' ? ' (CipherMQ format)' : ''}`
        this.note(`sent ${confirmed} message(s) ${what}`)
      }
    } finally {
      await client.close().catch(() => {})
    }
  }

  /** The argument, --file, or all of standard input as bytes. */
  private async readPayload(): Promise<Buffer> {
    if (this.args.payload !== undefined && this.flags.file) throw new UsageError('E_TWO_PAYLOADS', 'Give the payload as an argument or with --file, not both.', {hint: 'Try this: drop one of them.'})
    if (this.args.payload !== undefined) return Buffer.from(this.args.payload)
    if (this.flags.file) {
      try {
        return readFileSync(this.flags.file)
      } catch (error) {
        throw new UsageError('E_FILE', `Cannot read --file ${this.flags.file}: ${(error as Error).message}`, {hint: 'Try this: check the path and permissions.'})
      }
    }
    if (process.stdin.isTTY) throw new UsageError('E_NO_PAYLOAD', 'No payload: give it as an argument, with --file, or on standard input.', {hint: 'Try this: echo hello | mq send --queue q --to bob'})
    const chunks: Buffer[] = []
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
    return Buffer.concat(chunks)
  }
}
