import type {ValueOrigin} from './load.js'

export interface ConfigRow {
  key: string
  value: string
  /** "default", "file /path/config.yaml:3", "env MQ_BROKER_PORT", "flag" */
  origin: string
}

/** One row per leaf key of a (redacted) config, in the order of the config, with its origin. */
export function configRows(config: unknown, origins: Record<string, ValueOrigin>): ConfigRow[] {
  const rows: ConfigRow[] = []
  const walk = (node: unknown, path: string[]) => {
    const key = path.join('.')
    if (node !== null && typeof node === 'object' && !Array.isArray(node) && !(key in origins)) {
      for (const [k, v] of Object.entries(node)) walk(v, [...path, k])
      return
    }
    const o = origins[key]
    rows.push({key, origin: o ? [o.source, o.where].filter(Boolean).join(' ') : 'default', value: node === undefined ? '(unset)' : typeof node === 'string' ? node : JSON.stringify(node)})
  }
  walk(config, [])
  // optional keys with no value (client.relay, relay.port, ...) are listed too
  const seen = new Set(rows.map((r) => r.key))
  for (const [key, o] of Object.entries(origins)) if (!seen.has(key)) rows.push({key, origin: [o.source, o.where].filter(Boolean).join(' '), value: '(unset)'})
  return rows
}
