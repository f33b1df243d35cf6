import {Flags} from '@oclif/core'

import {MqCommand} from '../../lib/cli/base-command.js'
import {MqError} from '../../lib/errors.js'
import {runRelayBench} from '../../lib/relay/bench.js'
import {parseAddress} from '../../lib/relay/service.js'

export default class RelayBench extends MqCommand<typeof RelayBench> {
  static description = `Measure the relay: text messages/s through register/send/pull and file MiB/s up and down

Runs a relay in-process on a temporary SQLite home unless --relay names one (it then registers two bench-* users there). Prints a baseline from the same run and the ratios: the same client, connections, texts and file against a loopback twin that only frames each send and acks it (no parsing beyond that, no storage), and the disk's rate for the same file bytes written with an fsync.`

  static examples = ['<%= config.bin %> relay bench', '<%= config.bin %> relay bench --messages 5000 --file-mib 128 --json']
  static flags = {
    connections: Flags.integer({default: 1, description: 'parallel sender connections for the texts', max: 256, min: 1}),
    'file-mib': Flags.integer({default: 64, description: 'size of the file sent once', max: 1024, min: 1}),
    messages: Flags.integer({default: 2000, description: 'text messages to send and pull', max: 1_000_000, min: 1}),
    port: Flags.integer({default: 0, description: 'port of the in-process relay (0 = a free port)', max: 65_535, min: 0}),
    relay: Flags.string({description: 'bench an existing relay at HOST:PORT instead of an in-process one'}),
    store: Flags.string({aliases: ['store-url'], deprecateAliases: true, description: 'store URL for the in-process relay [default: a temporary SQLite file]'}),
    'text-bytes': Flags.integer({default: 100, description: 'plaintext bytes per text', max: 1024 * 1024, min: 0}),
  }

  async run(): Promise<Record<string, unknown>> {
    this.mqConfig()
    const r = await runRelayBench(
      {
        address: this.flags.relay ? parseAddress(this.flags.relay, '--relay') : undefined,
        connections: this.flags.connections,
        fileMiB: this.flags['file-mib'],
        messages: this.flags.messages,
        port: this.flags.port,
        storeUrl: this.flags.store,
        textBytes: this.flags['text-bytes'],
      },
      (line) => this.logger.info(line),
    )
    if (!this.jsonEnabled()) {
      this.out(
        [
          `relay ${r.relay} (${r.store}), ${r.messages} texts of ${r.text_bytes} bytes over ${r.connections} connection(s), one ${r.file_mib} MiB file`,
          `  send        ${r.send_msgs_per_s} msg/s, p50 ${r.send_p50_ms} ms, p99 ${r.send_p99_ms} ms, errors ${r.send_errors}   ` +
            (r.ratios.send_vs_roundtrip === null ? '(no ratio: sends failed)' : `(${r.ratios.send_vs_roundtrip}x the baseline's ${r.baseline.roundtrips_per_s} round trips/s; target >= ${r.targets.send_vs_roundtrip}x: ${r.ratios.send_vs_roundtrip >= r.targets.send_vs_roundtrip ? 'met' : 'not met'})`),
          `  send CPU    ${r.send_cpu_us} us per text (this process, client and relay), baseline ${r.baseline.roundtrip_cpu_us} us per round trip`,
          `  pull        ${r.pull_msgs_per_s} msg/s`,
          `  end to end  ${r.end_to_end_msgs_per_s} msg/s`,
          `  file up     ${r.file_upload_mib_per_s} MiB/s (${r.ratios.upload_vs_tcp}x the baseline's ${r.baseline.mib_per_s} MiB/s; target >= ${r.targets.upload_vs_tcp}x: ${r.ratios.upload_vs_tcp >= r.targets.upload_vs_tcp ? 'met' : 'not met'}; this disk: ${r.disk_mib_per_s} MiB/s written with fsync)`,
          `  file down   ${r.file_download_mib_per_s} MiB/s (${r.ratios.download_vs_tcp}x)`,
          `  peak RSS    ${r.peak_rss_mib} MiB (this process: bench client and in-process relay)`,
          `  baseline: ${r.baseline.name}`,
        ].join('\n'),
      )
    }
    if (r.send_errors > 0) {
      if (this.jsonEnabled()) this.out(JSON.stringify(r))
      throw new MqError('E_BENCH_ERRORS', `No texts ratio: ${r.send_errors} of ${r.messages} sends failed; a ratio counts only when every send succeeds.`, {
        hint: "Try this: look at the relay's log above and run the bench again.",
      })
    }
    return r as unknown as Record<string, unknown>
  }
}
