import {LOG_LEVELS} from './config/schema.js'

export type LogLevel = (typeof LOG_LEVELS)[number]
const RANK: Record<LogLevel, number> = {error: 0, warn: 1, info: 2, debug: 3}

export type LogFields = Record<string, unknown>

/** Logs go to stderr as `time LEVEL [component] message key=value ...`; stdout is for data. */
export class Logger {
  constructor(
    private level: LogLevel = 'info',
    private readonly component = '',
    private readonly sink: (line: string) => void = (line) => process.stderr.write(line + '\n'),
  ) {}

  child(component: string): Logger {
    return new Logger(this.level, this.component ? `${this.component}.${component}` : component, this.sink)
  }

  setLevel(level: LogLevel): void {
    this.level = level
  }

  enabled(level: LogLevel): boolean {
    return RANK[level] <= RANK[this.level]
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
    let line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${this.component ? `[${this.component}] ` : ''}${msg}`
    if (fields) {
      for (const [k, v] of Object.entries(fields)) {
        if (v === undefined) continue
        const s = typeof v === 'string' ? v : v instanceof Error ? v.message : JSON.stringify(v)
        line += ` ${k}=${/[\s"=]/.test(s) ? JSON.stringify(s) : s}`
      }
    }
    this.sink(line)
  }
}

/** A logger that discards everything, for library use without a CLI. */
export const silentLogger = new Logger('error', '', () => {})
