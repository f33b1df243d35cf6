import {Command, Errors, Flags, Interfaces} from '@oclif/core'
import {chalkStderr} from 'chalk'
import ora, {type Ora} from 'ora'

import {type ConfigInput, LOG_FORMATS, LOG_LEVELS, type MqConfig} from '../config/schema.js'
import {MqHome} from '../config/home.js'
import {type ValueOrigin, loadConfig} from '../config/load.js'
import {type SelectedContext, absoluteHome, contextConfig, selectContext} from '../config/contexts.js'
import {ExitCode, MqError, isMqError} from '../errors.js'
import {Logger, setClientLogger} from '../log.js'
import {suggestFlag} from './suggest.js'
import {snakeKeys} from '../util/case.js'

export type MqFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof MqCommand)['baseFlags'] & T['flags']>
export type MqArgs<T extends typeof Command> = Interfaces.InferredArgs<T['args']>

/**
 * Every mq command extends this: it parses the shared flags, loads the one config (defaults <
 * config/mq.yaml < $MQ_HOME/config.yaml or --config < MQ_* env < flags), and maps every error
 * to its documented exit code, in text and in --json mode alike.
 */
export abstract class MqCommand<T extends typeof Command> extends Command {
  static enableJsonFlag = true

  static baseFlags = {
    config: Flags.string({description: 'config file to read instead of $MQ_HOME/config.yaml', env: 'MQ_CONFIG', helpGroup: 'GLOBAL'}),
    home: Flags.string({description: "mq home directory [default: $MQ_HOME, the context's home, or ~/.mq]", helpGroup: 'GLOBAL'}),
    context: Flags.string({description: 'use this named context: broker, API, identity, home (mq context list) [default: MQ_CONTEXT, the current one]', env: 'MQ_CONTEXT', helpGroup: 'GLOBAL'}),
    'log-level': Flags.option({description: 'log verbosity on stderr [default: log_level, info]', helpGroup: 'GLOBAL', options: LOG_LEVELS})(),
    'log-format': Flags.option({description: 'log lines on stderr as text or JSON objects [default: log_format, text]', helpGroup: 'GLOBAL', options: LOG_FORMATS})(),
  }

  protected flags!: MqFlags<T>
  protected args!: MqArgs<T>
  protected home!: MqHome
  protected logger!: Logger
  private loaded?: MqConfig
  /** the named context in effect (--context, MQ_CONTEXT or the current one), if any */
  protected context?: SelectedContext
  /** where each value of the last loaded config came from */
  protected configOrigins: Record<string, ValueOrigin> = {}

  public async init(): Promise<void> {
    await super.init()
    const {args, flags} = await this.parse({
      args: this.ctor.args,
      baseFlags: (super.ctor as typeof MqCommand).baseFlags,
      enableJsonFlag: this.ctor.enableJsonFlag,
      flags: this.ctor.flags,
      strict: this.ctor.strict,
    })
    this.flags = flags as MqFlags<T>
    this.args = args as MqArgs<T>
    // the context commands manage the contexts: a current context that went missing must not lock them out
    this.context = this.id?.startsWith('context:') ? undefined : selectContext(this.flags.context)
    // --home and MQ_HOME beat the context's home, as flags and env beat it for every other value
    this.home = MqHome.resolve(this.flags.home ?? process.env.MQ_HOME ?? (this.context?.context.home ? absoluteHome(this.context.context.home) : undefined))
    this.logger = new Logger((this.flags['log-level'] as Logger['level'] | undefined) ?? 'info', '', undefined, (this.flags['log-format'] as Logger['format'] | undefined) ?? 'text')
    setClientLogger(this.logger.child('client'))
  }

  /** The effective config; `overrides` come from this command's own flags and win over everything. */
  protected mqConfig(overrides?: ConfigInput): MqConfig {
    if (this.loaded && !overrides) return this.loaded
    const logLevel = this.flags['log-level'] as MqConfig['log_level'] | undefined
    const logFormat = this.flags['log-format'] as MqConfig['log_format'] | undefined
    const flags: ConfigInput = {...overrides, ...(logLevel ? {log_level: logLevel} : {}), ...(logFormat ? {log_format: logFormat} : {})}
    const ctx = this.context ? {file: this.context.file, name: this.context.name, values: contextConfig(this.context.context) as ConfigInput} : undefined
    const {config, origins} = loadConfig({context: ctx, file: this.flags.config, flags, home: this.home.root})
    this.configOrigins = origins
    this.logger.setLevel(config.log_level)
    this.logger.setFormat(config.log_format)
    if (!overrides) this.loaded = config
    return config
  }

  /** The --json contract: snake_case keys on every command (docs/json.md). */
  protected toSuccessJson(result: unknown): unknown {
    return snakeKeys(result)
  }

  /** oclif colours --json output with a regex that overflows the stack on multi-megabyte strings (peeked bodies): those print plain. */
  logJson(json: unknown): void {
    const text = JSON.stringify(json, null, 2)
    if (text !== undefined && text.length > 1024 * 1024) process.stdout.write(text + '\n')
    else super.logJson(json)
  }

  /** Data for scripts goes to stdout. */
  protected out(text: string): void {
    process.stdout.write(text.endsWith('\n') ? text : text + '\n')
  }

  /** Progress and notes go to stderr, never stdout; with --log-format json as log lines, so stderr stays JSON. */
  protected note(text: string): void {
    if (this.logger?.format === 'json') this.commandLogger().info(text)
    else process.stderr.write(text + '\n')
  }

  /** the logger of this command's own lines: its topic is the component (broker, relay, send, ...) */
  private commandLogger(): Logger {
    return this.logger.child(this.id?.split(':')[0] ?? 'mq')
  }

  /** A spinner on stderr; silent when stderr is not a TTY or --json is on. */
  protected spinner(text: string): Ora {
    // a terminal of unknown width (a pty nobody sized) makes ora clear "infinitely many" lines, forever
    const tty = process.stderr.isTTY === true && (process.stderr.columns ?? 0) > 0 && this.logger?.format !== 'json'
    return ora({isEnabled: tty, isSilent: !tty, stream: process.stderr, text})
  }

  /** "Did you mean --queue?" for a mistyped flag (oclif's NonExistentFlagsError carries the typed names). */
  private flagHint(err: Error): string | undefined {
    const typed = (err as {flags?: unknown}).flags
    if (!Array.isArray(typed) || typed.length === 0 || !/^Nonexistent flag/.test(err.message)) return undefined
    const known = Object.keys({...this.ctor.flags, ...(this.ctor as unknown as typeof MqCommand).baseFlags, ...(this.ctor.enableJsonFlag ? {json: true} : {}), help: true})
    const fixes = typed.map((t) => [String(t), suggestFlag(String(t), known)] as const).filter(([, s]) => s !== undefined)
    if (fixes.length === 0) return undefined
    const meant = fixes.map(([t, s]) => `--${s} (not ${t.split('=')[0]})`).join(', ')
    return `Did you mean ${meant}? Try this: mq ${this.id?.replaceAll(':', ' ') ?? ''} --help`
  }

  protected async catch(err: Error & {exitCode?: number; oclif?: {exit?: number}}): Promise<unknown> {
    if (err instanceof Errors.ExitError) throw err
    let mqErr: MqError | undefined
    if (isMqError(err)) mqErr = cleanParseMessage(err.message) === err.message ? err : new MqError(err.code, cleanParseMessage(err.message), {details: err.details, exit: err.exit, hint: err.hint})
    else if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE' || (err as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL') {
      // a server's listen(): name the address, not "internal error"
      const e = err as NodeJS.ErrnoException & {address?: string; port?: number}
      const where = e.address === undefined ? '' : ` ${e.address}:${e.port}`
      const why = e.code === 'EADDRINUSE' ? 'that address is already in use' : 'that address is not on this machine'
      mqErr = new MqError('E_LISTEN', `Cannot listen on${where}: ${why}.`, {
        exit: ExitCode.UNAVAILABLE,
        hint: e.code === 'EADDRINUSE' ? 'Try this: choose another --port (see --help for the other listeners), or stop whatever uses it.' : 'Try this: --host 127.0.0.1, or an address of this machine (ip addr).',
      })
    } else if (err instanceof Errors.CLIError || (err.oclif && typeof err.oclif.exit === 'number')) {
      // oclif's own parse errors: exit 2 for usage
      const exit = (err.oclif?.exit ?? ExitCode.USAGE) as MqError['exit']
      let text = cleanParseMessage(err.message.replace(/^Error: /, '').replace(/^The following errors? occurred:\s*/, ''))
      // oclif adds a note about every multi-value flag a command has, even ones not given: keep it only when relevant
      const note = /\n\nNote: ((?:--[\w-]+(?:, )?)+) allows? multiple values[\s\S]*$/.exec(text)
      if (note && !note[1].split(', ').some((flag) => this.argv.some((a) => a === flag || a.startsWith(flag + '=')))) text = text.slice(0, note.index)
      mqErr = new MqError('E_USAGE', text.trim(), {exit, hint: this.flagHint(err) ?? `Try this: mq ${this.id?.replaceAll(':', ' ') ?? ''} --help`.trimEnd()})
    } else if ((err as NodeJS.ErrnoException).code === 'EACCES' || (err as NodeJS.ErrnoException).code === 'EPERM') {
      mqErr = new MqError('E_PERMISSION', err.message, {exit: ExitCode.NOPERM, hint: 'Try this: check the ownership and mode of that path, or use another --home.'})
    } else {
      mqErr = new MqError('E_INTERNAL', `internal error: ${err.message}`, {exit: ExitCode.SOFTWARE, hint: 'Try this: re-run with --log-level debug and report the output.'})
      if (this.logger?.enabled('debug')) process.stderr.write(`${err.stack}\n`)
    }
    if (this.jsonEnabled()) {
      process.stdout.write(JSON.stringify({error: mqErr.toJSON()}) + '\n')
    } else if (this.logger?.format === 'json') {
      // --log-format json: stderr holds JSON lines only, the error too
      this.commandLogger().error(mqErr.message, {code: mqErr.code, exit: mqErr.exit, hint: mqErr.hint})
    } else {
      process.stderr.write(`${chalkStderr.red('Error:')} ${mqErr.message}\n`)
      if (mqErr.hint) process.stderr.write(`${chalkStderr.dim(mqErr.hint)}\n`)
    }
    this.exit(mqErr.exit)
  }
}

/** oclif wraps flag errors as "Parsing --x \n\t<why>\nSee more help with --help": one line naming the flag instead. */
function cleanParseMessage(message: string): string {
  return message
    .replace(/\s*See more help with --help\s*$/, '')
    .replace(/^Parsing (--[\w-]+)\s*\n\t(?:\1\b:?\s*)?/, '$1: ')
    .trim()
}
