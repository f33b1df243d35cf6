import type {z} from 'zod'

import type {permissionRule} from '../config/schema.js'
import {PermissionError} from '../errors.js'
import type {Permissions} from './engine.js'

/** A broker.permissions entry as written in a config file (defaults not applied yet). */
export type PermissionRule = z.input<typeof permissionRule>

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
  /**
   * May look at a queue's messages without taking them (PEEK): whoever may consume it, or the
   * monitor right, except on the pipeline's delivery queue (bodies in clear: its readers and admins only).
   */
  canPeek?(queue: string): boolean
}

/**
 * The queue the ingest pipeline delivers into (sender numbers and bodies in clear): only admins and
 * the identities named in worker.readers may consume it, whatever the globs of broker.permissions say.
 */
export interface DeliveryQueue {
  queue: string
  readers: string[]
}

/** The CipherMQ listener's identity: unauthenticated, so it owns nothing and gets only what a rule names. */
export const CIPHERMQ_IDENTITY = 'ciphermq'

/** An identity owns the queue named after it and every queue under `IDENTITY.` */
export function ownsQueue(identity: string, queue: string): boolean {
  return identity !== CIPHERMQ_IDENTITY && (queue === identity || (queue.startsWith(identity + '.') && queue.length > identity.length + 1))
}

/** The refusal of a consume, naming the config to add (YAML flow style, as it would go into config.yaml). */
export function consumeForbidden(identity: string, queue: string, delivery?: DeliveryQueue): PermissionError {
  const q = JSON.stringify(queue)
  if (delivery && queue === delivery.queue) {
    return new PermissionError('E_FORBIDDEN', `${identity} may not consume from queue ${q}: it is the pipeline's delivery queue, readable only by admins and worker.readers`, {
      hint: `Try this: add the reader to the config: worker.readers: [${[...delivery.readers, identity].join(', ')}]`,
    })
  }
  if (identity === CIPHERMQ_IDENTITY) {
    return new PermissionError('E_FORBIDDEN', `CipherMQ clients are not allowed to use queue ${q}: the listener reaches only the queues in broker.ciphermq.queues`, {hint: `Try this: add it to the config: broker.ciphermq.queues: [${queue}]`})
  }
  const own = ` (${identity} may always consume queues named ${identity} or ${identity}.*)`
  return new PermissionError('E_FORBIDDEN', `${identity} may not consume from queue ${q}${own}`, {
    hint: `Try this: add a rule before the catch-all one: broker.permissions: [{identity: ${identity}, consume: [${queue}]}, ...]`,
  })
}

/** The refusal of a PEEK, naming both ways in. */
export function peekForbidden(identity: string, queue: string): PermissionError {
  return new PermissionError('E_FORBIDDEN', `${identity} may not look at queue ${JSON.stringify(queue)}: peeking needs the right to consume it or the monitor right`, {
    hint: `Try this: add a rule before the catch-all one: broker.permissions: [{identity: ${identity}, monitor: true}, ...] (or consume: [${queue}]), or use an admin identity`,
  })
}

/** The refusal of a monitoring call (queue lists, statuses, stats, metrics), naming the rule to add. */
export function monitorForbidden(identity: string, what: string): PermissionError {
  return new PermissionError('E_FORBIDDEN', `${identity} may not ${what}: it needs the monitor right`, {
    hint: `Try this: add a rule before the catch-all one: broker.permissions: [{identity: ${identity}, monitor: true}, ...], or use an admin identity`,
  })
}

/**
 * The first rule whose identity glob matches wins; no match means no rights at all. Consuming is
 * least-privilege: the identity's own queues (see ownsQueue) plus what the rule's consume globs
 * name; the pipeline's delivery queue only for admins and its readers. `monitor` (listing queues,
 * statuses, stats, /metrics) comes with the rule's monitor or admin. The CipherMQ identity is only
 * ever matched by a rule naming it exactly: a catch-all `*` rule grants it nothing.
 */
export function resolvePermissions(rules: PermissionRule[], identity: string, delivery?: DeliveryQueue): ResolvedPermissions {
  const rule = identity === CIPHERMQ_IDENTITY ? rules.find((r) => r.identity === identity) : rules.find((r) => globToRegExp(r.identity).test(identity))
  if (!rule) return {admin: false, canConsume: () => false, canPeek: () => false, canPublish: () => false, forbidConsume: (q) => consumeForbidden(identity, q, delivery), identity, monitor: false, roles: []}
  const admin = rule.admin ?? false
  const pub = (rule.publish ?? (identity === CIPHERMQ_IDENTITY ? [] : ['*'])).map(globToRegExp)
  const con = (rule.consume ?? []).map(globToRegExp)
  const monitor = admin || (rule.monitor ?? false)
  const roles = [...new Set([...(rule.roles ?? []), ...(admin ? ['admin'] : []), ...(monitor ? ['monitor'] : [])])]
  const reader = admin || (delivery?.readers.includes(identity) ?? false)
  const canConsume = (q: string) => {
    if (delivery && q === delivery.queue) return reader
    return ownsQueue(identity, q) || con.some((r) => r.test(q))
  }
  return {
    admin,
    canConsume,
    canPeek: (q) => canConsume(q) || (monitor && !(delivery && q === delivery.queue)),
    canPublish: (e) => pub.some((r) => r.test(e)),
    forbidConsume: (q) => consumeForbidden(identity, q, delivery),
    identity,
    monitor,
    roles,
  }
}

/**
 * The rights of CipherMQ listener clients (unauthenticated): broker.ciphermq.queues (declare, bind,
 * consume, fetch) and broker.ciphermq.exchanges (declare, publish), plus a broker.permissions rule
 * naming the identity "ciphermq" exactly. Nothing else: by default they reach nothing.
 */
export function cipherMqPermissions(rules: PermissionRule[], grants: {queues: string[]; exchanges: string[]}, delivery?: DeliveryQueue): ResolvedPermissions {
  const rule = rules.find((r) => r.identity === CIPHERMQ_IDENTITY)
  const merged: PermissionRule = {...rule, consume: [...(rule?.consume ?? []), ...grants.queues], identity: CIPHERMQ_IDENTITY, publish: [...(rule?.publish ?? []), ...grants.exchanges]}
  return resolvePermissions([merged], CIPHERMQ_IDENTITY, delivery)
}

/** One line for the broker's stderr at start: what the unauthenticated CipherMQ listener may reach. */
export function cipherMqReach(rules: PermissionRule[], grants: {queues: string[]; exchanges: string[]}, address: string): string {
  const rule = rules.find((r) => r.identity === CIPHERMQ_IDENTITY)
  const queues = [...(rule?.consume ?? []), ...grants.queues]
  const exchanges = [...(rule?.publish ?? []), ...grants.exchanges]
  const list = (xs: string[]) => (xs.length > 0 ? xs.join(', ') : 'none')
  const extra = [rule?.admin ? ' ADMIN' : '', rule?.admin || rule?.monitor ? ' monitor (stats)' : ''].join('')
  const reach = queues.length + exchanges.length === 0 && !rule?.admin ? 'nothing yet: grant queues with broker.ciphermq.queues and exchanges with broker.ciphermq.exchanges' : `queues [${list(queues)}] (declare, bind, consume, fetch), exchanges [${list(exchanges)}] (declare, publish)${extra}`
  return `CipherMQ listener on ${address} (plain TCP, no authentication): its clients may reach ${reach}`
}
