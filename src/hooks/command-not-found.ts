import type {Hook} from '@oclif/core'

import {ExitCode, MqError} from '../lib/errors.js'

/** Edit distance, for "did you mean" on a mistyped command. */
function distance(a: string, b: string): number {
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

/**
 * An unknown command gets the same error shape as every other mq error (exit 2, a "Try this:" hint,
 * {"error": ...} on stdout with --json) instead of oclif's default line.
 */
const hook: Hook<'command_not_found'> = async function (opts) {
  const typed = opts.id.replaceAll(':', ' ')
  const ids = opts.config.commands.filter((c) => !c.hidden).map((c) => c.id)
  const best = ids.map((id) => ({d: distance(opts.id, id), id})).sort((a, b) => a.d - b.d)[0]
  const near = best && best.d <= Math.max(2, Math.floor(opts.id.length / 3)) ? best.id.replaceAll(':', ' ') : undefined
  const topic = opts.id.split(':')[0]
  const inTopic = ids.some((id) => id.startsWith(topic + ':')) ? ` ${topic}` : ''
  // "mq config show extra": a real command followed by a word it does not take
  const parts = opts.id.split(':')
  const prefix = parts.map((_, i) => parts.slice(0, parts.length - 1 - i).join(':')).find((p) => p && ids.includes(p))
  const err = prefix
    ? new MqError('E_USAGE', `Unexpected argument: ${parts.slice(prefix.split(':').length).join(' ')} (mq ${prefix.replaceAll(':', ' ')} takes no arguments).`, {
        exit: ExitCode.USAGE,
        hint: `Try this: mq ${prefix.replaceAll(':', ' ')} --help`,
      })
    : new MqError('E_UNKNOWN_COMMAND', `"mq ${typed}" is not an mq command.`, {
        exit: ExitCode.USAGE,
        hint: near ? `Try this: mq ${near} (or mq${inTopic} --help for the list)` : `Try this: mq${inTopic} --help for the list of commands.`,
      })
  if (opts.argv?.includes('--json')) process.stdout.write(JSON.stringify({error: err.toJSON()}) + '\n')
  else process.stderr.write(`Error: ${err.message}\n${err.hint}\n`)
  process.exitCode = err.exit
}

export default hook
