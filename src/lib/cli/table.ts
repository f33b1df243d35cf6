/** Plain aligned columns for humans; scripts use --json. */
export function table(rows: Record<string, unknown>[], columns?: string[]): string {
  if (rows.length === 0) return '(none)'
  const cols = columns ?? Object.keys(rows[0])
  const cell = (v: unknown) => (v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v))
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)))
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i])).join('  ').trimEnd()
  // camelCase keys read as words: routingKey -> ROUTING-KEY
  const header = (c: string) => c.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toUpperCase()
  return [line(cols.map(header)), ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join('\n')
}
