import {UsageError} from '../errors.js'

/**
 * Every --timeout, --ttl, --retry-delay (every duration flag) takes "500ms", "10s", "2m", "1h" or "1.5s":
 * one rule for the whole CLI. A bare number is refused, because tools disagree on what it means
 * (mosquitto_sub -W 5 is seconds, our *_ms config keys are milliseconds); a wrong guess would wait
 * a thousand times too long or too short without a word.
 */
export function parseDuration(text: string, flag = '--timeout'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text)
  if (!m) throw new UsageError('E_DURATION', `${flag} "${text}" is not a duration.`, {hint: `Try this: ${flag} 500ms, 10s, 2m or 1h.`})
  if (m[2] === undefined) {
    throw new UsageError('E_DURATION', `${flag} "${text}" has no unit.`, {hint: `Try this: ${flag} ${m[1]}s (seconds) or ${flag} ${m[1]}ms (milliseconds).`})
  }
  const n = Number(m[1])
  const unit = m[2]
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
