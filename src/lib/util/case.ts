/** "messageId" -> "message_id", "uptimeMs" -> "uptime_ms"; snake_case keys are left as they are. */
export function snakeCase(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z])([A-Z][a-z])/g, '$1_$2').toLowerCase()
}

/** Fields whose keys are the user's own data (message headers, pipeline metadata): copied unchanged. */
const USER_KEYED = new Set(['headers', 'metadata'])

/**
 * The --json contract: every key of every command's output is snake_case, whatever casing the
 * library types use inside. Arrays and nested objects are converted; user-keyed maps are not.
 */
export function snakeKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => snakeKeys(v))
  if (value === null || typeof value !== 'object' || value instanceof Date || Buffer.isBuffer(value)) return value
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) out[snakeCase(k)] = USER_KEYED.has(k) ? v : snakeKeys(v)
  return out
}
