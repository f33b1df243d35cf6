import {UsageError} from '../errors.js'

/**
 * Every --timeout (and other duration) takes "500ms", "10s", "2m", "1h", "1.5s" or a bare number of
 * milliseconds: one rule for the whole CLI, matching the *_ms config keys it overrides.
 */
export function parseDuration(text: string, flag = '--timeout'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text)
  if (!m) throw new UsageError('E_DURATION', `${flag} "${text}" is not a duration.`, {hint: `Try this: ${flag} 500ms, 10s, 2m or 1h (a bare number is milliseconds).`})
  const n = Number(m[1])
  const unit = m[2] ?? 'ms'
  const ms = Math.round(n * (unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000))
  if (ms < 1) throw new UsageError('E_DURATION', `${flag} "${text}" is shorter than 1 ms.`, {hint: `Try this: ${flag} 500ms or 10s.`})
  return ms
}

/** "1500" -> "1.5s", "120000" -> "2m": durations in messages. */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`
  if (ms % 60_000 === 0) return `${ms / 60_000}m`
  if (ms >= 1000) return `${ms / 1000}s`
  return `${ms}ms`
}
