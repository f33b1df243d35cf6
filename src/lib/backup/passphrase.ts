import {readFileSync} from 'node:fs'

import {UsageError} from '../errors.js'

/** Reads a line from the terminal without echoing it (stdin must be a TTY). */
function prompt(question: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin
    process.stderr.write(question)
    let value = ''
    stdin.setRawMode(true)
    stdin.resume()
    const done = (err?: Error) => {
      stdin.setRawMode(false)
      stdin.pause()
      stdin.off('data', onData)
      process.stderr.write('\n')
      if (err) reject(err)
      else resolve(value)
    }
    const onData = (d: Buffer) => {
      for (const ch of d.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return done()
        if (ch === '\u0003') return done(new UsageError('E_INTERRUPTED', 'interrupted.'))
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1)
        else value += ch
      }
    }
    stdin.on('data', onData)
  })
}

/**
 * The backup passphrase: --passphrase-file, else MQ_BACKUP_PASSPHRASE, else a prompt on a terminal
 * (twice when creating). Never from a flag value: it would show in ps and shell history.
 */
export async function backupPassphrase(opts: {file?: string; confirm: boolean; env?: NodeJS.ProcessEnv}): Promise<string> {
  const env = opts.env ?? process.env
  let pass: string | undefined
  if (opts.file) {
    try {
      pass = readFileSync(opts.file, 'utf8').replace(/\r?\n$/, '')
    } catch (error) {
      throw new UsageError('E_PASSPHRASE_FILE', `Cannot read --passphrase-file ${opts.file}: ${(error as Error).message}`, {hint: 'Try this: check the path.'})
    }
  } else if (env.MQ_BACKUP_PASSPHRASE) pass = env.MQ_BACKUP_PASSPHRASE
  else if (process.stdin.isTTY) {
    pass = await prompt('Backup passphrase: ')
    if (opts.confirm && (await prompt('Again: ')) !== pass) throw new UsageError('E_PASSPHRASE_MISMATCH', 'the two passphrases differ.', {hint: 'Try this: run the command again.'})
  } else {
    throw new UsageError('E_PASSPHRASE_MISSING', 'a backup is encrypted and needs a passphrase.', {hint: 'Try this: --passphrase-file FILE, or export MQ_BACKUP_PASSPHRASE, or run it on a terminal.'})
  }
  if (opts.confirm && pass.length < 8) throw new UsageError('E_PASSPHRASE_WEAK', 'the backup passphrase must be at least 8 characters.', {hint: 'Try this: a long random passphrase kept apart from the backup.'})
  if (pass.length === 0) throw new UsageError('E_PASSPHRASE_MISSING', 'the backup passphrase is empty.', {hint: 'Try this: check --passphrase-file or MQ_BACKUP_PASSPHRASE.'})
  return pass
}
