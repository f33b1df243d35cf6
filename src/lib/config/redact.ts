import {redact} from '../store/sql.js'

/** A copy of the configuration fit to print: every URL's password replaced by ***. */
export function redactConfig<T>(value: T): T {
  if (typeof value === 'string') return (/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? redact(value) : value) as T
  if (Array.isArray(value)) return value.map((v) => redactConfig(v)) as T
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = redactConfig(v)
    return out as T
  }
  return value
}
