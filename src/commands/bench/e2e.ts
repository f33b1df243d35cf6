import {Flags} from '@oclif/core'

import {scaledForSize} from '../../lib/client/bench.js'
import {connectBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {spawnPrivateBroker} from '../../lib/client/spawn.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {MqHome} from '../../lib/config/home.js'
import {type ThroughputResult, benchEnvelope, benchThroughput} from '../../lib/crypto/index.js'
import {MqError} from '../../lib/errors.js'

export default class BenchE2e extends MqCommand<typeof BenchE2e> {
  static description = `Measure end-to-end encryption overhead: send -> broker -> recv throughput, plaintext then encrypted

Both runs go through a running broker with the same code paths as mq send and mq recv (publish window, prefetch, replay guard, acks after processing), one after the other on fresh queues, and the ratio encrypted/plaintext is reported for every payload size and recipient count, against its target (0.8x below 64 KiB, 0.9x from 64 KiB), with this process's CPU time per message (and the broker's, for a private broker). --crypto-only measures sealing and opening in this process without a broker.`

  static examples = [
    '<%= config.bin %> bench e2e',
    '<%= config.bin %> bench e2e --spawn --size 256,65536 --recipients 1,3',
    '<%= config.bin %> bench e2e --messages 50000 --size 1024 --json',
    '<%= config.bin %> bench e2e --crypto-only',
  ]

  static flags = {
    ...brokerFlags,
    messages: Flags.integer({description: 'messages per run', default: 10_000, min: 100}),
    size: Flags.integer({description: 'payload bytes per message; several (256,65536) measure each (big sizes send fewer messages: at most 1 GiB per run)', default: [256, 65_536], min: 0, multiple: true, delimiter: ','}),
    recipients: Flags.integer({description: 'recipients of each encrypted message; several (1,3) measure each', default: [1, 3], min: 1, max: 256, multiple: true, delimiter: ','}),
    durable: Flags.boolean({description: 'use durable queues (stored on the broker disk)', default: true, allowNo: true}),
    prefetch: Flags.integer({description: 'consumer prefetch', default: 512, min: 1}),
    'key-messages': Flags.integer({description: 'messages per data key [default: e2e.key_max_messages]', min: 1}),
    'crypto-only': Flags.boolean({description: 'seal/open in-process only, no broker'}),
    rounds: Flags.integer({description: 'alternating plaintext/encrypted rounds; medians are reported', default: 3, min: 1}),
    spawn: Flags.boolean({description: 'always use a private broker started for this run (also the fallback when none is reachable)'}),
  }

  async run(): Promise<ThroughputResult[] | Awaited<ReturnType<typeof benchEnvelope>>[]> {
    const config = this.mqConfig()
    const f = this.flags
    if (f['crypto-only']) {
      const out: Awaited<ReturnType<typeof benchEnvelope>>[] = []
      for (const size of f.size) {
        for (const recipients of f.recipients) {
          const r = await benchEnvelope({maxMessages: f['key-messages'], messages: scaledForSize(size, f.messages, 1).messages, recipients, size})
          if (!this.jsonEnabled()) this.out(`${size} B, ${recipients} recipient(s): seal ${r.sealPerSec} msg/s, open ${r.openPerSec} msg/s (+${r.overheadBytes} B envelope, ${r.keysCreated} data key(s), ${r.unwraps} RSA unwrap(s))`)
          out.push(r)
        }
      }
      return out
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
    const results: ThroughputResult[] = []
    try {
      for (const size of f.size) {
        const {messages, window} = scaledForSize(size, f.messages, Math.max(config.e2e.publish_window, f.prefetch))
        for (const recipients of f.recipients) {
          const spin = this.spinner(`Measuring ${messages} messages of ${size} B to ${recipients} recipient(s), plaintext then encrypted`).start()
          let r: ThroughputResult
          try {
            r = await benchThroughput(connect, {
              brokerPid: priv?.proc.pid,
              durable: f.durable,
              grantEvery: config.e2e.grant_every,
              maxMessages: f['key-messages'] ?? config.e2e.key_max_messages,
              messages,
              prefetch: Math.min(f.prefetch, window),
              recipients,
              rounds: f.rounds,
              size,
              window: Math.min(config.e2e.publish_window, window),
            })
          } finally {
            spin.stop()
          }
          results.push(r)
          if (!this.jsonEnabled()) this.report(r)
        }
      }
      return results
    } finally {
      await priv?.stop()
    }
  }

  private report(r: ThroughputResult): void {
    const cpu = (x: ThroughputResult['plain']): string => `${x.cpuUsPerMsg} us CPU/msg here${x.brokerCpuUsPerMsg === undefined ? '' : `, ${x.brokerCpuUsPerMsg} in the broker`}`
    this.out(`${r.size} B, ${r.recipients} recipient(s), ${r.messages} messages x ${r.rounds.length} round(s)`)
    this.out(`  rounds (plaintext/encrypted msg/s): ${r.rounds.map((x) => `${x.plain}/${x.encrypted}`).join(', ')}`)
    const perRound = (runs: ThroughputResult['plain'][]): string => runs.map((x) => (x.brokerCpuUsPerMsg === undefined ? `${x.cpuUsPerMsg}` : `${x.cpuUsPerMsg}+${x.brokerCpuUsPerMsg}`)).join(', ')
    this.out(`  CPU us/msg per round (here${r.plain.brokerCpuUsPerMsg === undefined ? '' : '+broker'}): plaintext ${perRound(r.runs.plain)}; encrypted ${perRound(r.runs.encrypted)}`)
    this.out(`  plaintext: ${r.plain.perSec} msg/s (${r.plain.mbPerSec} MB/s, ${r.plain.seconds} s; ${cpu(r.plain)})`)
    this.out(`  encrypted: ${r.encrypted.perSec} msg/s (${r.encrypted.mbPerSec} MB/s, ${r.encrypted.seconds} s; ${cpu(r.encrypted)}; ${r.keysCreated} data key(s), ${r.unwraps} RSA unwrap(s))`)
    // the envelope should cost little once a data key is shared: 0.8x of plaintext for small messages, 0.9x from 64 KiB
    const target = r.size >= 64 * 1024 ? 0.9 : 0.8
    this.out(`  ratio encrypted/plaintext: ${r.ratio} (target >= ${target}) ${r.ratio >= target ? 'OK' : 'BELOW TARGET'}; median per-round ratio ${r.roundRatio}; CPU/msg here encrypted/plaintext ${r.cpuRatio}`)
  }
}
