/**
 * Named client profiles, as `nats context`: each holds a broker address, an API URL, an identity and
 * a home. They live in one user file, $XDG_CONFIG_HOME/mq/contexts.yaml (default
 * ~/.config/mq/contexts.yaml), outside every home, since a context picks the home. The chosen context
 * (--context, MQ_CONTEXT, else the file's `current`) sits between the config file and the environment:
 * config file < context < MQ_* environment < flags; its home is used when neither --home nor MQ_HOME is given.
 */
import {existsSync, readFileSync} from 'node:fs'
import {homedir} from 'node:os'
import {isAbsolute, join, resolve} from 'node:path'

import {parseDocument, stringify} from 'yaml'
import {z} from 'zod'

import {ConfigError, MqError, NotFoundError} from '../errors.js'
import {ensureDir, writeFileAtomic} from '../util/fs.js'
import {checkName} from '../util/names.js'

export interface MqContext {
  broker?: string
  api?: string
  identity?: string
  home?: string
  description?: string
}

const contextSchema = z
  .object({broker: z.string().min(1).optional(), api: z.string().min(1).optional(), identity: z.string().min(1).optional(), home: z.string().min(1).optional(), description: z.string().optional()})
  .strict()
const fileSchema = z.object({current: z.string().nullable().optional(), contexts: z.record(contextSchema.nullable()).nullable().default({})}).strict()

export interface ContextsFile {
  current?: string
  contexts: Record<string, MqContext>
}

/** Where the contexts are kept. */
export function contextsPath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : join(homedir(), '.config')
  return join(base, 'mq', 'contexts.yaml')
}

export function readContexts(file = contextsPath()): ContextsFile {
  if (!existsSync(file)) return {contexts: {}}
  const doc = parseDocument(readFileSync(file, 'utf8'), {prettyErrors: false})
  if (doc.errors.length > 0) throw new ConfigError('E_CONFIG_SYNTAX', `${file}: YAML syntax error: ${doc.errors[0].message.split('\n')[0]}`, {hint: `Try this: fix ${file}, or remove it and add the contexts again (mq context add)`})
  const r = fileSchema.safeParse(doc.toJS() ?? {})
  if (!r.success) {
    const issue = r.error.issues[0]
    throw new ConfigError('E_CONFIG_INVALID', `${file}: ${issue.path.join('.') || '(top level)'}: ${issue.message}`, {hint: `Try this: fix ${file} (keys: current, contexts.NAME.broker|api|identity|home|description)`})
  }
  const contexts: Record<string, MqContext> = {}
  for (const [k, v] of Object.entries(r.data.contexts ?? {})) contexts[k] = v ?? {}
  return {contexts, current: r.data.current ?? undefined}
}

export function writeContexts(c: ContextsFile, file = contextsPath()): void {
  ensureDir(join(file, '..'), 0o700)
  const sorted = Object.fromEntries(Object.keys(c.contexts).sort().map((k) => [k, c.contexts[k]]))
  writeFileAtomic(file, `# mq contexts: mq context add|use|list|remove (see the README, "Contexts")\n${stringify({...(c.current ? {current: c.current} : {}), contexts: sorted})}`, 0o600)
}

export function checkContextName(name: string): string {
  return checkName(name, 'context name')
}

export function unknownContext(name: string, file: string, known: string[]): MqError {
  return new NotFoundError('E_NOT_FOUND', `no context named ${JSON.stringify(name)} in ${file}`, {hint: known.length > 0 ? `Try this: one of ${known.join(', ')} (mq context list)` : `Try this: mq context add ${name} --broker HOST:PORT`})
}

export interface SelectedContext {
  name: string
  file: string
  context: MqContext
  /** how it was chosen */
  by: '--context' | 'MQ_CONTEXT' | 'current'
}

/** The context in effect: --context, else MQ_CONTEXT, else the file's current one; none when nothing names one. */
export function selectContext(flag: string | undefined, env: NodeJS.ProcessEnv = process.env, file = contextsPath(env)): SelectedContext | undefined {
  // oclif fills --context from MQ_CONTEXT: a value equal to the variable came from it
  const by = flag !== undefined && flag !== env.MQ_CONTEXT ? '--context' : env.MQ_CONTEXT ? 'MQ_CONTEXT' : 'current'
  const wanted = flag ?? env.MQ_CONTEXT
  if (wanted === '') return undefined
  if (wanted === undefined && !existsSync(file)) return undefined
  const all = readContexts(file)
  const name = wanted ?? all.current
  if (!name) return undefined
  const context = all.contexts[name]
  if (!context) {
    if (by === 'current') throw new ConfigError('E_CONFIG_INVALID', `${file}: current context ${JSON.stringify(name)} is not defined`, {hint: `Try this: mq context use NAME with one of: ${Object.keys(all.contexts).join(', ') || '(none: mq context add)'}`})
    throw unknownContext(name, file, Object.keys(all.contexts))
  }
  return {by, context, file, name}
}

/** The context's settings as config values (client.broker, client.api, client.identity). */
export function contextConfig(c: MqContext): {client: Record<string, string>} {
  const client: Record<string, string> = {}
  if (c.broker) client.broker = c.broker
  if (c.api) client.api = c.api
  if (c.identity) client.identity = c.identity
  return {client}
}

export function absoluteHome(home: string): string {
  return resolve(home.startsWith('~/') ? join(homedir(), home.slice(2)) : home)
}
