import {UsageError} from '../errors.js'

/** A password from stdin (never a flag, so it stays out of shell history); one trailing newline dropped. */
export async function readPasswordFromStdin(usage: string): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  const password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
  if (password === '') throw new UsageError('E_NO_PASSWORD', 'No password on stdin.', {hint: `Try this: printf %s "$PASSWORD" | ${usage}`})
  return password
}
