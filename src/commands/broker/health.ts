import {apiFlags} from '../../lib/admin/client.js'
import {fetchBrokerHealth} from '../../lib/client/health.js'
import type {HealthReport} from '../../lib/health/index.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {ExitCode} from '../../lib/errors.js'

function detail(c: Record<string, unknown>): string {
  const parts: string[] = []
  for (const [k, v] of Object.entries(c)) {
    if (k === 'status' || k === 'hint' || v === null || typeof v === 'object') continue
    parts.push(`${k}=${v}`)
  }
  return parts.join(' ')
}

export default class BrokerHealth extends MqCommand<typeof BrokerHealth> {
  static summary = 'Health of a running broker: engine, records store, Redis and CRL, from its /health.'
  static description = `Health of a running broker (GET /health of its HTTPS API): engine, records store (SQL ping and latency),
Redis (once the ingest pipeline uses the broker), CRL freshness. Exit 0 when ok or degraded (a warning on stderr), 69 when failing or unreachable.`
  static examples = ['<%= config.bin %> broker health', '<%= config.bin %> broker health --json', '<%= config.bin %> broker health --api https://10.0.0.5:5701']
  static flags = {api: apiFlags.api}

  async run(): Promise<HealthReport> {
    const {report, url} = await fetchBrokerHealth(this.home, this.mqConfig(), this.flags)
    if (this.jsonEnabled()) {
      if (report.status === 'failing') {
        // the report is the data even when failing; the exit code says it is failing
        process.stdout.write(JSON.stringify(report, null, 2) + '\n')
        this.exit(ExitCode.UNAVAILABLE)
      }
      return report
    }
    // without the monitor right the broker answers the verdicts only (no connections, uptime or details)
    const figures = report.uptime_ms === undefined ? '' : `   connections ${report.connections}   uptime ${Math.round(report.uptime_ms / 1000)} s`
    const lines = [`broker ${url}: ${report.status}${figures}`]
    const width = Math.max(...Object.keys(report.components).map((k) => k.length))
    for (const [name, c] of Object.entries(report.components)) {
      lines.push(`  ${name.padEnd(width)}  ${c.status.padEnd(8)}  ${detail(c)}`.trimEnd())
      if (c.hint) lines.push(`  ${''.padEnd(width)}  ${c.hint}`)
    }
    this.out(lines.join('\n'))
    const bad = Object.entries(report.components).filter(([, c]) => c.status !== 'ok').map(([n]) => n)
    if (report.status === 'failing') {
      this.note(`Error: the broker is failing (${bad.join(', ')})`)
      this.exit(ExitCode.UNAVAILABLE)
    }
    if (report.status === 'degraded') this.note(`Warning: the broker is degraded (${bad.join(', ')})`)
    return report
  }
}
