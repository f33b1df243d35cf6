import {readFileSync} from 'node:fs'

/**
 * CPU seconds (user + system) used so far by a process (its pid) or by the calling thread
 * ('thread': /proc/thread-self, so a bench can tell its load generator's CPU from a server thread's
 * in the same process); null where Linux's /proc is not there or the process is gone.
 */
export function cpuSeconds(of: number | 'thread' | undefined): number | null {
  if (of === undefined) return null
  try {
    const stat = readFileSync(of === 'thread' ? '/proc/thread-self/stat' : `/proc/${of}/stat`, 'utf8')
    // after the parenthesised command name (which may itself hold ') '): utime and stime, in clock ticks (100/s)
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / 100
  } catch {
    return null
  }
}

/** CPU microseconds per request between two cpuSeconds() readings; null when either is missing. */
export function perRequestUs(before: number | null, after: number | null, requests: number): number | null {
  return before === null || after === null || requests === 0 ? null : Math.round(((after - before) * 1e6) / requests)
}
