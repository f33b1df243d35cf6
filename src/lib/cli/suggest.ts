/** "Did you mean ...?" for a mistyped command or flag: pure, so the hook and the commands share it. */

/** Levenshtein distance (insert, delete, substitute each cost 1). */
export function editDistance(a: string, b: string): number {
  const row = Array.from({length: b.length + 1}, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = cur
    }
  }
  return row[b.length]
}

/** A typo this far from a name is still that name; further than this, a guess would mislead more than help. */
function closeEnough(typed: string, d: number): boolean {
  return d <= Math.max(2, Math.floor(typed.length / 3))
}

export interface CommandSuggestion {
  /** the command id meant, colon-separated as oclif stores it */
  id: string
  /** the words after the mistyped command: its arguments, which the suggestion keeps */
  args: string[]
}

/**
 * oclif joins every word before the first flag into the id it looks up, so `mq keygn bob` arrives as
 * "keygn:bob": try each split into command words and argument words and keep the closest command, so
 * the suggestion is `mq keygen bob`, not nothing.
 */
export function suggestCommand(id: string, commandIds: readonly string[]): CommandSuggestion | undefined {
  const words = id.split(':')
  let best: {d: number; id: string; n: number} | undefined
  for (let n = words.length; n >= 1; n--) {
    const typed = words.slice(0, n).join(':')
    for (const candidate of commandIds) {
      const d = editDistance(typed, candidate)
      if (!closeEnough(typed, d)) continue
      // the closest wins; on a tie the longer command (fewer words taken as arguments)
      if (!best || d < best.d) best = {d, id: candidate, n}
    }
  }
  return best && {args: words.slice(best.n), id: best.id}
}

/** The closest flag (without dashes) to a mistyped `--flag`, or undefined when none is near. */
export function suggestFlag(typed: string, flagNames: readonly string[]): string | undefined {
  const name = typed.replace(/^-+/, '').split('=')[0]
  // a one- or two-letter flag is within two edits of every short name: any guess would be noise
  if (name.length < 3) return undefined
  let best: {d: number; name: string} | undefined
  for (const candidate of flagNames) {
    if (candidate.length < 2) continue
    const d = editDistance(name, candidate)
    if (closeEnough(name, d) && (!best || d < best.d)) best = {d, name: candidate}
  }
  return best?.name
}
