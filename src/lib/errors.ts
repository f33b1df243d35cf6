/**
 * Typed errors with stable codes. Every failure a user can meet is an MqError whose
 * `code` is stable across releases and whose `exit` follows sysexits(3), so scripts
 * can branch on either. `hint` is the "Try this: ..." line.
 */
export const ExitCode = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  DATAERR: 65,
  NOT_FOUND: 66,
  UNAVAILABLE: 69,
  SOFTWARE: 70,
  TEMPFAIL: 75,
  NOPERM: 77,
  CONFIG: 78,
} as const
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode]

export interface MqErrorOptions {
  hint?: string
  exit?: ExitCodeValue
  cause?: unknown
  details?: Record<string, unknown>
}

export class MqError extends Error {
  readonly code: string
  readonly exit: ExitCodeValue
  readonly hint?: string
  readonly details?: Record<string, unknown>

  constructor(code: string, message: string, opts: MqErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : {cause: opts.cause})
    this.name = 'MqError'
    this.code = code
    this.exit = opts.exit ?? ExitCode.FAILURE
    this.hint = opts.hint
    this.details = opts.details
  }

  toJSON(): Record<string, unknown> {
    return {code: this.code, message: this.message, ...(this.hint ? {hint: this.hint} : {}), exit: this.exit, ...(this.details ? {details: this.details} : {})}
  }
}

/** Bad input data: a malformed file, value or message (65). */
export class DataError extends MqError {
  constructor(code: string, message: string, opts: Omit<MqErrorOptions, 'exit'> = {}) {
    super(code, message, {...opts, exit: ExitCode.DATAERR})
  }
}

/**
 * The named thing (queue, exchange, message, client, certificate, user, a recipient's keys) does not
 * exist (66, sysexits' EX_NOINPUT): one exit code for every command, so a script can tell "absent"
 * from "failed". The code is E_NOT_FOUND unless a caller has a more specific one.
 */
export class NotFoundError extends MqError {
  constructor(code: string, message: string, opts: Omit<MqErrorOptions, 'exit'> = {}) {
    super(code, message, {...opts, exit: ExitCode.NOT_FOUND})
  }
}

/** A configuration value is wrong (78). */
export class ConfigError extends MqError {
  constructor(code: string, message: string, opts: Omit<MqErrorOptions, 'exit'> = {}) {
    super(code, message, {...opts, exit: ExitCode.CONFIG})
  }
}

/** A server or service could not be reached (69). */
export class UnavailableError extends MqError {
  constructor(code: string, message: string, opts: Omit<MqErrorOptions, 'exit'> = {}) {
    super(code, message, {...opts, exit: ExitCode.UNAVAILABLE})
  }
}

/** Timed out or temporarily failed; retrying may work (75). */
export class TempFailError extends MqError {
  constructor(code: string, message: string, opts: Omit<MqErrorOptions, 'exit'> = {}) {
    super(code, message, {...opts, exit: ExitCode.TEMPFAIL})
  }
}

/** Permission, TLS or authentication failure (77). */
export class PermissionError extends MqError {
  constructor(code: string, message: string, opts: Omit<MqErrorOptions, 'exit'> = {}) {
    super(code, message, {...opts, exit: ExitCode.NOPERM})
  }
}

/** A usage error the CLI detects after oclif's own parsing (2). */
export class UsageError extends MqError {
  constructor(code: string, message: string, opts: Omit<MqErrorOptions, 'exit'> = {}) {
    super(code, message, {...opts, exit: ExitCode.USAGE})
  }
}

export function isMqError(err: unknown): err is MqError {
  return err instanceof MqError
}

/** Best-effort message text of any thrown value. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message
  return String(err)
}
