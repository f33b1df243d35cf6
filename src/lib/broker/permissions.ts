import type {MqConfig} from '../config/schema.js'
import type {Permissions} from './engine.js'

export type PermissionRule = MqConfig['broker']['permissions'][number]

/** Shell-style glob (`*`, `?`) to an anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = '^'
  for (const ch of glob) {
    if (ch === '*') re += '.*'
    else if (ch === '?') re += '.'
    else re += ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&')
  }
  return new RegExp(re + '$')
}

export interface ResolvedPermissions extends Permissions {
  identity: string
  roles: string[]
}

/** The first rule whose identity glob matches wins; no match means no rights at all. */
export function resolvePermissions(rules: PermissionRule[], identity: string): ResolvedPermissions {
  const rule = rules.find((r) => globToRegExp(r.identity).test(identity))
  if (!rule) return {admin: false, canConsume: () => false, canPublish: () => false, identity, roles: []}
  const pub = rule.publish.map(globToRegExp)
  const con = rule.consume.map(globToRegExp)
  const roles = [...new Set([...rule.roles, ...(rule.admin ? ['admin'] : [])])]
  return {
    admin: rule.admin,
    canConsume: (q) => con.some((r) => r.test(q)),
    canPublish: (e) => pub.some((r) => r.test(e)),
    identity,
    roles,
  }
}
