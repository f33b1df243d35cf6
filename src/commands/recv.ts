import {Flags} from '@oclif/core'
import {generateKeyPairSync} from 'node:crypto'
import {existsSync} from 'node:fs'
import {join} from 'node:path'

import type {Delivery} from '../lib/client/client.js'
import {connectBroker} from '../lib/client/connect.js'
import {brokerFlags} from '../lib/client/flags.js'
import {MqCommand} from '../lib/cli/base-command.js'
import {durationFlag} from '../lib/cli/duration-flag.js'
import {
  IdentityResolver,
  MessageReceiver,
  OutputSink,
  ReplayGuard,
  checkIdentityName,
  loadOwnIdentity,
  reasonOf,
  receiveLoop,
  recvOutcome,
} from '../lib/crypto/index.js'
import {MqError, UsageError} from '../lib/errors.js'
import {formatDuration} from '../lib/util/duration.js'

export default class Recv extends MqCommand<typeof Recv> {
  static description = `Receive messages from a queue, decrypt and verify them

Prints each payload raw on stdout (default), or one JSON object per line with --json. A message that fails to decrypt or verify, comes in a format not accepted, or repeats a message id this identity already accepted (replay) is rejected with the reason (the broker moves it to the queue's dead-letter queue, when the queue has one: mq queue declare Q --dead-letter Q.dlq) and reported on stderr, never printed. A message is acked only after it was written. Without --count or --follow, one message is received.

A failure to check a message that says nothing about the message itself (the broker's key directory unavailable, a local key file that cannot be read, a missing CA certificate) is temporary: the message goes back to the queue, the reason is reported on stderr, and recv finishes the messages in hand and exits 75; run it again once the cause is fixed.

Exit status: 0 when done; 75 when a message could not be checked now (it stays queued), or --timeout passed with nothing received (or fewer than --count); 65 when only rejected messages arrived.`

  static examples = [
    '<%= config.bin %> recv --queue orders --identity bob',
    '<%= config.bin %> recv --queue orders --count 10 --timeout 5s --json',
    '<%= config.bin %> recv --queue orders --follow --out received_messages.json',
    '<%= config.bin %> recv --queue legacy --accept ciphermq --json',
  ]

  static flags = {
    ...brokerFlags,
    queue: Flags.string({char: 'q', description: 'queue to consume', required: true}),
    count: Flags.integer({char: 'n', description: 'exit after this many messages [default: 1]', min: 1, exclusive: ['follow']}),
    follow: Flags.boolean({description: 'keep receiving until SIGINT/SIGTERM (then finish the message in hand, ack it, exit 0)'}),
    timeout: durationFlag({description: 'give up after this long without a message: 500ms, 10s or 2m (exit 75 if nothing arrived)'}),
    out: Flags.string({char: 'o', description: 'append {message_id, message, timestamp} JSON lines to this file (the CipherMQ Receiver format) instead of printing payloads'}),
    lines: Flags.boolean({description: 'raw mode: print a newline after each payload'}),
    as: Flags.string({description: 'end-to-end identity that decrypts [default: --identity]'}),
    accept: Flags.option({description: 'formats to accept (repeatable) [default: e2e.accept, native]', multiple: true, multipleNonGreedy: true, options: ['native', 'ciphermq', 'plain'] as const})(),
    prefetch: Flags.integer({description: 'deliveries in flight from the broker [default: 256, or --count if lower]', min: 1}),
  }

  async run(): Promise<void> {
    const config = this.mqConfig()
    const f = this.flags
    const idleTimeoutMs = f.timeout
    const count = f.follow ? undefined : (f.count ?? 1)
    const tlsIdentity = f.identity ?? process.env.MQ_IDENTITY ?? config.client.identity
    const accept = f.accept ?? config.e2e.accept
    const meName = checkIdentityName(f.as ?? tlsIdentity)
    // plaintext only (--accept plain): nothing is decrypted, so no end-to-end identity is needed;
    // the opener still wants a key, so it gets a throwaway one that never opens anything
    const plainOnly = accept.every((a) => a === 'plain') && !existsSync(join(this.home.keys, `${meName}.key`))
    const me = plainOnly ? {encPrivateKey: generateKeyPairSync('ec', {namedCurve: 'P-256'}).privateKey, name: meName} : loadOwnIdentity(this.home, meName, '--as')
    if (f.lines && (this.jsonEnabled() || f.out)) throw new UsageError('E_FLAGS', '--lines applies to raw output only.', {hint: 'Try this: drop --lines with --json or --out.'})

    const sink = new OutputSink(this.jsonEnabled() ? 'json' : f.out ? 'none' : 'raw', f.lines, f.out)
    const replay = await ReplayGuard.open(this.home, me.name, {windowMs: config.e2e.replay_window_ms})
    const ac = new AbortController()
    const onSignal = (): void => ac.abort()
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    try {
      // --timeout here is the idle time for messages; the connect timeout stays client.timeout_ms
      const client = await connectBroker(this.home, config, {broker: f.broker, identity: tlsIdentity})
      try {
        const receiver = new MessageReceiver({
          accept,
          cacheSize: config.e2e.key_cache_size,
          identity: {encPrivateKey: me.encPrivateKey!, name: me.name},
          // every delivery's body is a buffer of its own, read by nothing after the receiver
          inPlace: true,
          replay,
          resolveSender: new IdentityResolver(this.home, client, (m) => this.logger.warn(m)).senderResolver(),
        })
        // a person at a terminal otherwise sees nothing at all until a message arrives
        if (process.stderr.isTTY) this.note(`waiting for messages on ${f.queue}${idleTimeoutMs === undefined ? '' : ` for up to ${formatDuration(idleTimeoutMs)} each`} (Ctrl-C to stop)`)
        const result = await receiveLoop<Delivery>(client, receiver, sink, {
          count,
          idleTimeoutMs,
          onDefer: (d, err) => this.report('deferred', d, err),
          onReject: (d, err) => this.report('rejected', d, err),
          prefetch: Math.min(f.prefetch ?? 256, count ?? Number.POSITIVE_INFINITY),
          queue: f.queue,
          signal: ac.signal,
        })
        recvOutcome(result, {count, queue: f.queue, timeoutMs: f.timeout}, (line) => this.note(line))
      } finally {
        await client.close().catch(() => {})
      }
    } finally {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      sink.close()
      await replay.close()
    }
  }

  private report(what: 'rejected' | 'deferred', d: Delivery, err: unknown): void {
    const code = err instanceof MqError ? err.code : 'E_INTERNAL'
    if (this.jsonEnabled()) {
      process.stderr.write(JSON.stringify({[what]: {code, delivery_tag: d.deliveryTag, message_id: d.messageId, queue: d.queue, reason: reasonOf(err)}}) + '\n')
    } else if (what === 'rejected') {
      this.note(`mq recv: rejected message ${d.messageId} from ${d.queue}: ${reasonOf(err)}`)
    } else {
      this.note(`mq recv: could not check message ${d.messageId} now, it goes back to ${d.queue}: ${reasonOf(err)}`)
    }
  }
}
