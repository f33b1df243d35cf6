import type {Hook} from '@oclif/core'

import notFound from '@oclif/plugin-not-found'

import {suggestCommand} from '../lib/cli/suggest.js'
import {ExitCode, MqError} from '../lib/errors.js'

const spaced = (id: string): string => id.replaceAll(':', ' ')

/**
 * An unknown command gets the same error shape as every other mq error (exit 2, a "Try this:" hint,
 * {"error": ...} on stdout with --json) instead of oclif's default line. On a terminal, the kept
 * @oclif/plugin-not-found asks "Did you mean ...?" first and runs the suggestion, arguments and all;
 * it is called from here rather than listed as a plugin because two command_not_found hooks would
 * both answer, and its own non-interactive answer (exit 127, no suggestion) is not our contract.
 */
const hook: Hook<'command_not_found'> = async function (opts) {
  const argv = opts.argv ?? []
  const ids = opts.config.commands.filter((c) => !c.hidden).flatMap((c) => [c.id, ...c.aliases])
  const parts = opts.id.split(':')
  // "mq config show extra": a real command followed by a word it does not take
  const prefix = parts.map((_, i) => parts.slice(0, parts.length - 1 - i).join(':')).find((p) => p && ids.includes(p))
  if (prefix) {
    return fail(
      new MqError('E_USAGE', `Unexpected argument: ${parts.slice(prefix.split(':').length).join(' ')} (mq ${spaced(prefix)} takes no arguments).`, {
        exit: ExitCode.USAGE,
        hint: `Try this: mq ${spaced(prefix)} --help`,
      }),
      argv,
    )
  }
  const near = suggestCommand(opts.id, ids)
  const json = argv.includes('--json')
  if (near && !json && process.stdin.isTTY === true && process.stderr.isTTY === true) {
    // the words the user typed as the command, the rest as that command's arguments
    const typedWords = parts.length - near.args.length
    try {
      return await notFound.call(this, {...opts, argv: [...near.args, ...argv], id: parts.slice(0, typedWords).join(':')})
    } catch (error) {
      // declined (or no answer within its 10 s): fall through to our error below; a failure of the
      // command it ran is that command's own error, already reported
      if (!(error instanceof Error && /is not a|for a list of available commands/.test(error.message))) throw error
    }
  }
  const topic = parts[0]
  const inTopic = ids.some((id) => id.startsWith(topic + ':')) ? ` ${topic}` : ''
  const meant = near ? [spaced(near.id), ...near.args, ...argv].join(' ') : undefined
  return fail(
    new MqError('E_UNKNOWN_COMMAND', `"mq ${spaced(opts.id)}" is not an mq command.`, {
      exit: ExitCode.USAGE,
      hint: meant ? `Try this: mq ${meant} (or mq${inTopic} --help for the list)` : `Try this: mq${inTopic} --help for the list of commands.`,
    }),
    argv,
  )
}

function fail(err: MqError, argv: string[]): void {
  if (argv.includes('--json')) process.stdout.write(JSON.stringify({error: err.toJSON()}) + '\n')
  else process.stderr.write(`Error: ${err.message}\n${err.hint}\n`)
  process.exitCode = err.exit
}

export default hook
