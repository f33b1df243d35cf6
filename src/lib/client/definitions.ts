/**
 * `mq definitions export|import`: the broker's exchanges, queues (with their settings), bindings and
 * permission rules as one JSON document, as RabbitMQ's definitions. Import is idempotent and checks
 * the whole file against the broker before it changes anything.
 */
import {readFileSync} from 'node:fs'

import {z} from 'zod'

import {permissionRule} from '../config/schema.js'
import {DataError, MqError, NotFoundError} from '../errors.js'
import type {BrokerDefinitions} from '../wire/types.js'
import type {BrokerClient} from './client.js'

export const DEFINITIONS_FORMAT = 1

const fileSchema = z
  .object({
    mq_definitions: z.literal(DEFINITIONS_FORMAT),
    exchanges: z.array(z.object({name: z.string().min(1), type: z.enum(['direct', 'fanout', 'topic']), durable: z.boolean()}).strict()).default([]),
    queues: z
      .array(
        z
          .object({
            name: z.string().min(1),
            durable: z.boolean(),
            dead_letter: z.string().min(1).nullable().default(null),
            ttl_ms: z.number().int().positive().nullable().default(null),
            max_length: z.number().int().positive().nullable().default(null),
          })
          .strict(),
      )
      .default([]),
    bindings: z.array(z.object({exchange: z.string().min(1), queue: z.string().min(1), routing_key: z.string()}).strict()).default([]),
    permissions: z.array(z.record(z.unknown())).default([]),
  })
  .strict()

export type DefinitionsFile = z.infer<typeof fileSchema>

/** The file form (snake_case, sorted as the broker sorts): exporting twice gives the same bytes. */
export function toFile(d: BrokerDefinitions): DefinitionsFile {
  return {
    mq_definitions: DEFINITIONS_FORMAT,
    exchanges: d.exchanges.map((e) => ({name: e.name, type: e.type, durable: e.durable})),
    queues: d.queues.map((q) => ({name: q.name, durable: q.durable, dead_letter: q.deadLetter, ttl_ms: q.ttlMs, max_length: q.maxLength})),
    bindings: d.bindings.map((b) => ({exchange: b.exchange, queue: b.queue, routing_key: b.routingKey})),
    permissions: d.permissions ?? [],
  }
}

export function formatDefinitions(f: DefinitionsFile): string {
  return JSON.stringify(f, null, 2) + '\n'
}

/** Reads and checks a definitions file; anything malformed is E_BAD_DEFINITIONS (exit 65) naming the file. */
/** file '-' is standard input (mq definitions export - | mq definitions import -) */
export function readDefinitions(file: string): DefinitionsFile {
  let text: string
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8')
  } catch (error) {
    throw new NotFoundError('E_NOT_FOUND', `cannot read definitions file ${file}: ${(error as Error).message}`, {hint: 'Try this: mq definitions export FILE on the source broker first'})
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    throw new DataError('E_BAD_DEFINITIONS', `${file} is not JSON: ${(error as Error).message}`, {hint: 'Try this: use a file written by mq definitions export'})
  }
  const r = fileSchema.safeParse(json)
  if (!r.success) {
    const issue = r.error.issues[0]
    throw new DataError('E_BAD_DEFINITIONS', `${file}: ${issue.path.join('.') || '(top level)'}: ${issue.message}`, {hint: 'Try this: use a file written by mq definitions export (format "mq_definitions": 1)'})
  }
  // permission rules as the broker's config reads them (defaults filled in), so equal rules compare equal
  const permissions = r.data.permissions.map((rule, i) => {
    const p = permissionRule.safeParse(rule)
    if (!p.success) {
      const issue = p.error.issues[0]
      throw new DataError('E_BAD_DEFINITIONS', `${file}: permissions.${i}${issue.path.length > 0 ? '.' + issue.path.join('.') : ''}: ${issue.message}`, {hint: 'Try this: rules as in broker.permissions (identity, publish, consume, admin, monitor, roles)'})
    }
    return p.data as Record<string, unknown>
  })
  return {...r.data, permissions}
}

const canon = (v: unknown) => JSON.stringify(v)

export interface ImportReport {
  exchanges: {created: number; unchanged: number}
  queues: {created: number; unchanged: number}
  bindings: {created: number; unchanged: number}
  /** the file's permission rules equal the broker's broker.permissions (they live in its config: import cannot change them) */
  permissionsMatch: boolean
  permissions: Record<string, unknown>[]
}

/**
 * Applies a definitions file. Every conflict (an exchange of another type, a queue with other
 * settings, a binding to something neither the file nor the broker has) is found first and reported
 * together, with nothing changed; otherwise what is missing is declared and what exists is left alone,
 * so importing twice changes nothing the second time.
 */
export async function importDefinitions(c: BrokerClient, f: DefinitionsFile, file: string): Promise<ImportReport> {
  const have = toFile(await c.definitions())
  const exchanges = new Map(have.exchanges.map((e) => [e.name, e]))
  const queues = new Map(have.queues.map((q) => [q.name, q]))
  const bindings = new Set(have.bindings.map((b) => canon([b.exchange, b.queue, b.routing_key])))
  const conflicts: string[] = []
  for (const e of f.exchanges) {
    const x = exchanges.get(e.name)
    if (x && x.type !== e.type) conflicts.push(`exchange ${e.name}: type ${x.type} on the broker, ${e.type} in the file`)
  }
  for (const q of f.queues) {
    const x = queues.get(q.name)
    if (!x) continue
    const diff = (['durable', 'dead_letter', 'ttl_ms', 'max_length'] as const).filter((k) => x[k] !== q[k]).map((k) => `${k} ${canon(x[k])} on the broker, ${canon(q[k])} in the file`)
    if (diff.length > 0) conflicts.push(`queue ${q.name}: ${diff.join(', ')}`)
  }
  const fileExchanges = new Set(f.exchanges.map((e) => e.name))
  const fileQueues = new Set(f.queues.map((q) => q.name))
  for (const b of f.bindings) {
    if (!fileExchanges.has(b.exchange) && !exchanges.has(b.exchange)) conflicts.push(`binding ${b.queue} -> ${b.exchange}: exchange ${b.exchange} is neither in the file nor on the broker`)
    if (!fileQueues.has(b.queue) && !queues.has(b.queue)) conflicts.push(`binding ${b.queue} -> ${b.exchange}: queue ${b.queue} is neither in the file nor on the broker`)
  }
  if (conflicts.length > 0) {
    throw new MqError('E_DEFINITIONS_CONFLICT', `${file} conflicts with the broker's definitions; nothing was changed:\n  ${conflicts.join('\n  ')}`, {
      details: {conflicts},
      hint: 'Try this: change the file, or delete what differs on the broker (mq queue delete / mq exchange delete) and import again',
    })
  }
  const report: ImportReport = {bindings: {created: 0, unchanged: 0}, exchanges: {created: 0, unchanged: 0}, permissions: f.permissions, permissionsMatch: canon(f.permissions) === canon(have.permissions), queues: {created: 0, unchanged: 0}}
  for (const e of f.exchanges) {
    if (exchanges.has(e.name)) report.exchanges.unchanged++
    else {
      await c.declareExchange(e.name, e.type, {durable: e.durable})
      report.exchanges.created++
    }
  }
  // a queue named as another's dead-letter queue comes after it: declared first on its own, it would get a NAME.dlq.dlq
  const targets = new Set(f.queues.map((q) => q.dead_letter).filter((d): d is string => d !== null))
  const ordered = [...f.queues.filter((q) => !targets.has(q.name)), ...f.queues.filter((q) => targets.has(q.name))]
  for (const q of ordered) {
    if (queues.has(q.name)) {
      report.queues.unchanged++
      continue
    }
    // may exist by now as the dead-letter queue of one declared before it: declaring it again checks its settings
    await c.declareQueue(q.name, {deadLetter: q.dead_letter ?? undefined, durable: q.durable, exact: true, maxLength: q.max_length ?? undefined, ttlMs: q.ttl_ms ?? undefined})
    report.queues.created++
  }
  for (const b of f.bindings) {
    if (bindings.has(canon([b.exchange, b.queue, b.routing_key]))) report.bindings.unchanged++
    else {
      await c.bind(b.queue, b.exchange, b.routing_key)
      report.bindings.created++
    }
  }
  return report
}
