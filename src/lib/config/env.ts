import {z} from 'zod'

import {ConfigError} from '../errors.js'
import {configSchema} from './schema.js'

/** Short names kept for scripts: they match the CLI flags of the client commands. */
export const ENV_ALIASES: Record<string, string[]> = {
  MQ_BROKER: ['client', 'broker'],
  MQ_IDENTITY: ['client', 'identity'],
  MQ_RELAY: ['client', 'relay'],
  MQ_API: ['client', 'api'],
  MQ_LOG_LEVEL: ['log_level'],
}

type Leaf = {path: string[]; kind: 'string' | 'number' | 'boolean' | 'array' | 'json'}

function unwrap(schema: z.ZodTypeAny): z.ZodTypeAny {
  let s = schema
  for (;;) {
    if (s instanceof z.ZodDefault) s = s._def.innerType
    else if (s instanceof z.ZodOptional) s = s._def.innerType
    else if (s instanceof z.ZodNullable) s = s._def.innerType
    else if (s instanceof z.ZodEffects) s = s._def.schema
    else return s
  }
}

function leaves(schema: z.ZodTypeAny, path: string[] = []): Leaf[] {
  const s = unwrap(schema)
  if (s instanceof z.ZodObject) {
    const out: Leaf[] = []
    for (const [k, v] of Object.entries(s.shape as Record<string, z.ZodTypeAny>)) out.push(...leaves(v, [...path, k]))
    return out
  }
  if (s instanceof z.ZodNumber) return [{path, kind: 'number'}]
  if (s instanceof z.ZodBoolean) return [{path, kind: 'boolean'}]
  if (s instanceof z.ZodArray) return [{path, kind: unwrap(s.element) instanceof z.ZodObject ? 'json' : 'array'}]
  return [{path, kind: 'string'}]
}

export const CONFIG_LEAVES: Leaf[] = leaves(configSchema)

export function envNameFor(path: string[]): string {
  return 'MQ_' + path.join('_').toUpperCase()
}

function coerce(name: string, raw: string, kind: Leaf['kind']): unknown {
  switch (kind) {
    case 'number': {
      const n = Number(raw)
      if (raw.trim() === '' || !Number.isFinite(n)) {
        throw new ConfigError('E_CONFIG_ENV', `Environment variable ${name}=${JSON.stringify(raw)} is not a number.`, {hint: `Try this: export ${name}=<number>, or unset it.`})
      }
      return n
    }
    case 'boolean': {
      if (/^(1|true|yes|on)$/i.test(raw)) return true
      if (/^(0|false|no|off)$/i.test(raw)) return false
      throw new ConfigError('E_CONFIG_ENV', `Environment variable ${name}=${JSON.stringify(raw)} is not a boolean.`, {hint: `Try this: export ${name}=true or ${name}=false.`})
    }
    case 'array':
      return raw.split(',').map((s) => s.trim()).filter(Boolean)
    case 'json':
      try {
        return JSON.parse(raw)
      } catch {
        throw new ConfigError('E_CONFIG_ENV', `Environment variable ${name} must hold JSON.`, {hint: `Try this: export ${name}='[...]'.`})
      }
    default:
      return raw
  }
}

export interface EnvOverrides {
  values: Record<string, unknown>
  /** dotted path -> env variable that set it, for error messages */
  origins: Map<string, string>
}

export function readEnv(env: NodeJS.ProcessEnv): EnvOverrides {
  const values: Record<string, unknown> = {}
  const origins = new Map<string, string>()
  const set = (name: string, leaf: Leaf) => {
    const raw = env[name]
    if (raw === undefined) return
    let node = values
    for (const k of leaf.path.slice(0, -1)) node = (node[k] ??= {}) as Record<string, unknown>
    node[leaf.path.at(-1)!] = coerce(name, raw, leaf.kind)
    origins.set(leaf.path.join('.'), name)
  }
  for (const leaf of CONFIG_LEAVES) set(envNameFor(leaf.path), leaf)
  for (const [name, path] of Object.entries(ENV_ALIASES)) {
    const leaf = CONFIG_LEAVES.find((l) => l.path.join('.') === path.join('.'))
    if (leaf) set(name, leaf)
  }
  return {values, origins}
}
