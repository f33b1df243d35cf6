import {Flags} from '@oclif/core'

import {connectBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {spawnPrivateBroker} from '../../lib/client/spawn.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {MqHome} from '../../lib/config/home.js'
import {type ThroughputResult, benchEnvelope, benchThroughput} from '../../lib/crypto/index.js'
import {MqError} from '../../lib/errors.js'

export default class BenchE2e extends MqCommand<typeof BenchE2e> {
  static description = `Measure end-to-end encryption overhead: send -> broker -> recv throughput, plaintext then encrypted

Both runs go through a running broker with the same code paths as mq send and mq recv (publish window, prefetch, replay guard, acks after processing), one after the other on fresh queues, and the ratio encrypted/plaintext is reported. --crypto-only measures sealing and opening in this process without a broker.`

  static examples = ['<%= config.bin %> bench e2e', '<%= config.bin %> bench e2e --messages 50000 --size 1024 --json', '<%= config.bin %> bench e2e --crypto-only']

  static flags = {
    ...brokerFlags,
    messages: Flags.integer({description: 'messages per run', default: 10_000, min: 100}),
    size: Flags.integer({description: 'payload bytes per message', default: 256, min: 0}),
    durable: Flags.boolean({description: 'use durable queues (stored on the broker disk)', default: true, allowNo: true}),
    prefetch: Flags.integer({description: 'consumer prefetch', default: 512, min: 1}),
    'key-messages': Flags.integer({description: 'messages per data key [default: e2e.key_max_messages]', min: 1}),
    'crypto-only': Flags.boolean({description: 'seal/open in-process only, no broker'}),
    rounds: Flags.integer({description: 'alternating plaintext/encrypted rounds; medians are reported', default: 3, min: 1}),
    spawn: Flags.boolean({description: 'always use a private broker started for this run (also the fallback when none is reachable)'}),
  }

  async run(): Promise<ThroughputResult | Awaited<ReturnType<typeof benchEnvelope>>> {
    const config = this.mqConfig()
    const f = this.flags
    if (f['crypto-only']) {
      const r = await benchEnvelope({maxMessages: f['key-messages'], messages: f.messages, size: f.size})
      if (!this.jsonEnabled()) this.out(`seal ${r.sealPerSec} msg/s, open ${r.openPerSec} msg/s (${r.size} B payload, +${r.overheadBytes} B envelope, ${r.keysCreated} data key(s), ${r.unwraps} RSA unwrap(s))`)
      return r
    }
    let home = this.home
    let broker = f.broker
    let priv: Awaited<ReturnType<typeof spawnPrivateBroker>> | undefined
    const connect = () => connectBroker(home, config, {broker, identity: f.identity ?? (priv ? 'admin' : undefined), timeoutMs: f.timeout})
    if (!f.spawn) {
      try {
        await (await connect()).close()
      } catch (error) {
        if (!(error instanceof MqError) || !['E_BROKER_UNREACHABLE', 'E_CA_MISSING', 'E_NO_IDENTITY'].includes(error.code)) throw error
        this.note(`No broker reachable (${error.message}); starting a private one for this run.`)
        priv = await spawnPrivateBroker()
      }
    } else priv = await spawnPrivateBroker()
    if (priv) {
      home = new MqHome(priv.home)
      broker = `127.0.0.1:${priv.port}`
    }
    const spin = this.spinner(`Measuring ${f.messages} messages of ${f.size} B, plaintext then encrypted`).start()
    try {
      const r = await benchThroughput(connect, {
        durable: f.durable,
        maxMessages: f['key-messages'] ?? config.e2e.key_max_messages,
        messages: f.messages,
        prefetch: f.prefetch,
        rounds: f.rounds,
        size: f.size,
        window: config.e2e.publish_window,
      })
      spin.stop()
      if (!this.jsonEnabled()) {
        this.out(`rounds (plaintext/encrypted msg/s): ${r.rounds.map((x) => `${x.plain}/${x.encrypted}`).join(', ')}`)
        this.out(`plaintext: ${r.plain.perSec} msg/s (${r.plain.mbPerSec} MB/s, ${r.plain.seconds} s)`)
        this.out(`encrypted: ${r.encrypted.perSec} msg/s (${r.encrypted.mbPerSec} MB/s, ${r.encrypted.seconds} s; ${r.keysCreated} data key(s), ${r.unwraps} RSA unwrap(s))`)
        // the envelope should cost little once a data key is shared: 0.8x of plaintext for small messages, 0.9x from 64 KiB
        const target = f.size >= 64 * 1024 ? 0.9 : 0.8
        this.out(`ratio encrypted/plaintext: ${r.ratio} (target >= ${target}) ${r.ratio >= target ? 'OK' : 'BELOW TARGET'}`)
      }
      return r
    } finally {
      spin.stop()
      await priv?.stop()
    }
  }
}
