import {existsSync, readFileSync} from 'node:fs'
import {fileURLToPath} from 'node:url'
import {LineCounter, parseDocument} from 'yaml'

import {ConfigError} from '../errors.js'
import {CONFIG_LEAVES, readEnv} from './env.js'
import {type ConfigInput, type MqConfig, configSchema} from './schema.js'

/** The documented example shipped with mq; it sits between built-in defaults and the user's file. */
export const SHIPPED_CONFIG = fileURLToPath(new URL('../../../../config/mq.yaml', import.meta.url))

export interface LoadOptions {
  /** $MQ_HOME; its config.yaml is read unless `file` is given */
  home: string
  /** --config FILE */
  file?: string
  env?: NodeJS.ProcessEnv
  /** values from command-line flags: highest precedence */
  flags?: ConfigInput
  /** read the shipped config/mq.yaml (default true) */
  shipped?: boolean
  /** the selected context's values: above the config file, below the environment */
  context?: {name: string; file: string; values: ConfigInput}
}

/** Where a value of the effective config came from (`mq config show --origins`). */
export interface ValueOrigin {
  source: 'default' | 'file' | 'context' | 'env' | 'flag'
  /** file:line, the environment variable, or what a derived default follows */
  where?: string
}

export interface LoadedConfig {
  config: MqConfig
  /** files that were read, lowest precedence first */
  files: string[]
  /** dotted key -> where its value came from, for every leaf key */
  origins: Record<string, ValueOrigin>
}

/** Defaults that follow other keys: a client of a home talks to the servers of the same home. */
const DERIVED: Record<string, string> = {
  'client.api': 'broker.api_host, broker.api_port',
  'client.broker': 'broker.host, broker.port',
}

export interface Source {
  kind: ValueOrigin['source']
  label: string
  values: Record<string, unknown>
  locate?: (path: (string | number)[]) => string | undefined
}

type Obj = Record<string, unknown>
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)

function merge(base: Obj, over: Obj): Obj {
  const out: Obj = {...base}
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue
    out[k] = isObj(v) && isObj(out[k]) ? merge(out[k] as Obj, v) : v
  }
  return out
}

function has(values: Obj, path: (string | number)[]): boolean {
  let node: unknown = values
  for (const k of path) {
    if (node === null || typeof node !== 'object' || !(k in (node as Obj))) return false
    node = (node as Obj)[k as string]
  }
  return true
}

function readYaml(file: string, kind: ValueOrigin['source'] = 'file'): Source {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (error) {
    throw new ConfigError('E_CONFIG_READ', `Cannot read config file ${file}: ${(error as Error).message}`, {hint: 'Try this: check the path given to --config, or remove it to use the defaults.'})
  }
  return parseYamlSource(text, file, kind)
}

/** Parses config text (YAML) named `file` in messages; every bad input is a ConfigError. */
export function parseYamlSource(text: string, file: string, kind: ValueOrigin['source'] = 'file'): Source {
  const lc = new LineCounter()
  const doc = parseDocument(text, {lineCounter: lc, prettyErrors: false})
  if (doc.errors.length > 0) {
    const e = doc.errors[0]
    const pos = lc.linePos(e.pos[0])
    throw new ConfigError('E_CONFIG_SYNTAX', `${file}:${pos.line}: YAML syntax error: ${e.message.split('\n')[0]}`, {hint: 'Try this: fix the YAML at that line (indentation with spaces, "key: value").'})
  }
  let values: unknown
  try {
    values = doc.toJS() ?? {}
  } catch (error) {
    // found by the fuzzer: an alias with no anchor (or an alias bomb past maxAliasCount) throws here
    throw new ConfigError('E_CONFIG_SYNTAX', `${file}: YAML error: ${(error as Error).message.split('\n')[0]}`, {hint: 'Try this: define each &anchor before its *alias, or write the value out.'})
  }
  if (!isObj(values)) {
    throw new ConfigError('E_CONFIG_SYNTAX', `${file}:1: the config must be a mapping of keys to values.`, {hint: 'Try this: start from config/mq.yaml.'})
  }
  return {
    kind,
    label: file,
    values,
    locate(path) {
      for (let n = path.length; n > 0; n--) {
        const node = doc.getIn(path.slice(0, n), true) as {range?: [number, number, number]} | undefined
        if (node?.range) return `${file}:${lc.linePos(node.range[0]).line}`
        // a key whose value is null has no node; fall through to the parent
      }
      return file
    },
  }
}

export function loadConfig(opts: LoadOptions): LoadedConfig {
  const sources: Source[] = []
  const files: string[] = []
  if (opts.shipped !== false && existsSync(SHIPPED_CONFIG)) {
    // the shipped example documents the defaults: its values count as defaults
    sources.push(readYaml(SHIPPED_CONFIG, 'default'))
    files.push(SHIPPED_CONFIG)
  }
  const userFile = opts.file ?? `${opts.home}/config.yaml`
  if (opts.file !== undefined || existsSync(userFile)) {
    if (opts.file !== undefined && !existsSync(opts.file)) {
      throw new ConfigError('E_CONFIG_READ', `Config file ${opts.file} does not exist.`, {hint: 'Try this: check the path given to --config (or MQ_CONFIG).'})
    }
    sources.push(readYaml(userFile))
    files.push(userFile)
  }
  if (opts.context) {
    const ctx = opts.context
    sources.push({kind: 'context', label: `context ${ctx.name} (${ctx.file})`, values: ctx.values as Obj, locate: (p) => `context ${ctx.name}: ${p.at(-1)}`})
  }
  const env = readEnv(opts.env ?? process.env)
  sources.push({kind: 'env', label: 'environment', values: env.values, locate: (p) => env.origins.get(p.join('.')) && `environment variable ${env.origins.get(p.join('.'))}`})
  if (opts.flags) sources.push({kind: 'flag', label: 'command-line flags', values: opts.flags as Obj, locate: () => 'command-line flag'})
  return {config: resolveSources(sources), files, origins: originsOf(sources)}
}

/** Merges sources (lowest precedence first) and validates the result against the schema. */
export function resolveSources(sources: Source[]): MqConfig {
  let merged: Obj = {}
  for (const s of sources) merged = merge(merged, s.values)
  const parsed = configSchema.safeParse(merged)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const key = issue.path.join('.') || '(top level)'
    // blame the highest-precedence source that set this key (for unknown keys: the unknown key itself)
    const blamed = issue.code === 'unrecognized_keys' ? [...issue.path, (issue as {keys: string[]}).keys[0]] : issue.path
    const origin = [...sources].reverse().find((s) => has(s.values, blamed))
    const where = origin?.locate?.(blamed) ?? origin?.label ?? 'config'
    let detail = issue.message
    if (issue.code === 'unrecognized_keys') {
      const keys = (issue as {keys: string[]}).keys
      detail = `unknown key${keys.length > 1 ? 's' : ''} ${keys.map((k) => JSON.stringify(k)).join(', ')}`
    }
    throw new ConfigError('E_CONFIG_INVALID', `${where}: ${key}: ${detail}`, {
      hint: 'Try this: correct that key (config/mq.yaml documents every key and its default).',
      details: {key, source: where},
    })
  }
  return parsed.data
}

function originsOf(sources: Source[]): Record<string, ValueOrigin> {
  const origins: Record<string, ValueOrigin> = {}
  for (const leaf of CONFIG_LEAVES) {
    const key = leaf.path.join('.')
    const from = [...sources].reverse().find((s) => has(s.values, leaf.path))
    if (from) {
      const where = from.kind === 'env' ? from.locate?.(leaf.path)?.replace(/^environment variable /, '') : from.kind === 'flag' ? undefined : from.kind === 'context' ? from.label.replace(/^context /, '') : from.locate?.(leaf.path)
      origins[key] = {source: from.kind, ...(where ? {where} : {})}
    } else origins[key] = {source: 'default', ...(DERIVED[key] ? {where: `follows ${DERIVED[key]}`} : {})}
  }
  return origins
}

/** Built-in defaults alone (no files, no env). */
export function defaultConfig(): MqConfig {
  return configSchema.parse({})
}
