import {createRequire} from 'node:module'

import type {Logger as Pino} from 'pino'

import {LOG_FORMATS, LOG_LEVELS} from './config/schema.js'

export type LogLevel = (typeof LOG_LEVELS)[number]
export type LogFormat = (typeof LOG_FORMATS)[number]
const RANK: Record<LogLevel, number> = {error: 0, warn: 1, info: 2, debug: 3}

export type LogFields = Record<string, unknown>
type Sink = (line: string) => void

/**
 * What a logger and all its children share: one level and one format for the whole process, so
 * `--log-level`/`log_level` set after the children were made (the config is read after the command
 * starts) still reach every component.
 */
interface Shared {
  level: LogLevel
  format: LogFormat
  sink: Sink
  /** the one pino logger of the process, made on the first JSON line */
  pino?: Pino
  /** pino children by component, so a hot path does not make one per line */
  children: Map<string, Pino>
}

// pino (about 25 modules) loads with the first JSON line: text logs, the default, and every CLI
// call that logs nothing do not pay for it at startup. CommonJS, so loading it stays synchronous.
const require = createRequire(import.meta.url)

const stderrSink: Sink = (line) => process.stderr.write(line + '\n')

/**
 * Logs go to stderr (stdout is for data). `text` (the default) is for people:
 * `time LEVEL [component] message key=value ...`; `json` is one JSON object per line, written by pino
 * (time, level, component, msg and the fields), for log shippers. A child per component (broker, api,
 * ciphermq, proxy, worker, relay, portal, ...) names where a line comes from in both formats.
 */
export class Logger {
  private readonly shared: Shared

  constructor(level: LogLevel = 'info', private readonly component = '', sink: Sink = stderrSink, format: LogFormat = 'text', shared?: Shared) {
    this.shared = shared ?? {children: new Map(), format, level, sink}
  }

  get level(): LogLevel {
    return this.shared.level
  }

  get format(): LogFormat {
    return this.shared.format
  }

  child(component: string): Logger {
    // "proxy" under "proxy" is still the proxy: no "proxy.proxy"
    const name = !this.component ? component : this.component.split('.').at(-1) === component ? this.component : `${this.component}.${component}`
    return new Logger(this.shared.level, name, this.shared.sink, this.shared.format, this.shared)
  }

  /** Sets the level of this logger and every logger made from the same root. */
  setLevel(level: LogLevel): void {
    this.shared.level = level
    if (this.shared.pino) this.shared.pino.level = level
    for (const c of this.shared.children.values()) c.level = level
  }

  /** Sets the format of this logger and every logger made from the same root. */
  setFormat(format: LogFormat): void {
    this.shared.format = format
  }

  enabled(level: LogLevel): boolean {
    return RANK[level] <= RANK[this.shared.level]
  }

  error(msg: string, fields?: LogFields): void {
    this.write('error', msg, fields)
  }

  warn(msg: string, fields?: LogFields): void {
    this.write('warn', msg, fields)
  }

  info(msg: string, fields?: LogFields): void {
    this.write('info', msg, fields)
  }

  debug(msg: string, fields?: LogFields): void {
    this.write('debug', msg, fields)
  }

  private write(level: LogLevel, msg: string, fields?: LogFields): void {
    if (!this.enabled(level)) return
    if (this.shared.format === 'json') return this.pinoFor()[level](plainFields(fields), msg)
    let line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${this.component ? `[${this.component}] ` : ''}${msg}`
    if (fields) {
      for (const [k, v] of Object.entries(fields)) {
        if (v === undefined) continue
        const s = typeof v === 'string' ? v : v instanceof Error ? v.message : JSON.stringify(v)
        line += ` ${k}=${/[\s"=]/.test(s) ? JSON.stringify(s) : s}`
      }
    }
    this.shared.sink(line)
  }

  private pinoFor(): Pino {
    const s = this.shared
    if (!s.pino) {
      const {pino, stdTimeFunctions} = require('pino') as typeof import('pino')
      // synchronous writes: a server's last lines before it exits (a fatal error, a signal) are not lost
      const stream = s.sink === stderrSink ? pino.destination({dest: 2, sync: true}) : {write: (chunk: string) => s.sink(chunk.replace(/\n$/, ''))}
      s.pino = pino(
        {
          base: {pid: process.pid},
          formatters: {level: (label) => ({level: label})},
          level: s.level,
          timestamp: stdTimeFunctions.isoTime,
        },
        stream,
      )
    }
    let c = s.children.get(this.component)
    if (!c) {
      c = this.component ? s.pino.child({component: this.component}) : s.pino
      c.level = s.level
      s.children.set(this.component, c)
    }
    return c
  }
}

/** Errors as their message (JSON.stringify makes an Error "{}"), everything else as it is. */
function plainFields(fields?: LogFields): LogFields {
  if (!fields) return {}
  const out: LogFields = {}
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) out[k] = v instanceof Error ? v.message : v
  return out
}

let clientLog: Logger | undefined

/** The CLI's logger for its client side, so `--log-level debug` shows what every command connects to and why it fails. */
export function setClientLogger(logger: Logger): void {
  clientLog = logger
}

/** The logger set by setClientLogger, if a CLI command runs. */
export function clientLogger(): Logger | undefined {
  return clientLog
}

/** A logger that discards everything, for library use without a CLI. */
export const silentLogger = new Logger('error', '', () => {})
