/**
 * `mq queue redrive`: dead letters back to the queue they died in. Each dead letter is republished
 * (same message id, body and headers) straight to its destination queue through the default exchange,
 * and acknowledged on the dead-letter queue only once the broker confirmed the republish (stored, for
 * a durable queue on disk). A crash between the two leaves the dead letter in place: the next redrive
 * moves it again, so a duplicate is possible but nothing is lost. Such a dead letter comes back flagged
 * redelivered, and is reported (and marked x-redrive-possible-duplicate) as a possible duplicate.
 */
import {MqError} from '../errors.js'
import {Window} from '../util/window.js'
import type {BrokerClient, Delivery} from './client.js'

/** republishes awaiting their confirm at once: enough to fill a group commit, few enough to stop promptly */
const WINDOW = 64

export interface RedriveReport {
  queue: string
  moved: number
  /** destination queue -> messages moved there */
  byDestination: Record<string, number>
  /** left in the dead-letter queue, with why */
  skipped: {messageId: string; reason: string}[]
  /** moved, but the dead letter had been delivered before (an earlier redrive or consumer may have moved it already) */
  possibleDuplicates: string[]
}

/** Where a dead letter goes: --to, else the queue its death header names. */
function destination(d: Delivery, to?: string): string | undefined {
  return to ?? d.headers['x-death-queue']
}

/** The headers of the republished message: the death headers become redrive headers (a new death writes new ones). */
function redriveHeaders(d: Delivery, dlq: string, duplicate: boolean): Record<string, string> {
  const h: Record<string, string> = {}
  for (const [k, v] of Object.entries(d.headers)) if (!k.startsWith('x-death-') && !k.startsWith('x-redrive')) h[k] = v
  h['x-redriven-from'] = dlq
  if (d.headers['x-death-reason']) h['x-redriven-reason'] = d.headers['x-death-reason']
  if (d.exchange) h['x-original-exchange'] = d.exchange
  h['x-original-routing-key'] = d.routingKey
  if (duplicate) h['x-redrive-possible-duplicate'] = '1'
  return h
}

export async function redrive(c: BrokerClient, dlq: string, opts: {to?: string; count?: number; onMoved?: (messageId: string, to: string) => void} = {}): Promise<RedriveReport> {
  const report: RedriveReport = {byDestination: {}, moved: 0, possibleDuplicates: [], queue: dlq, skipped: []}
  /** dead letters kept unacked (skipped), given back at the end in their order */
  const held: Delivery[] = []
  const moved = new Set<string>()
  const window = new Window(WINDOW)
  let failure: unknown
  const limit = opts.count ?? Number.POSITIVE_INFINITY
  let taken = 0
  try {
    while (taken < limit && failure === undefined) {
      const d = await c.get(dlq)
      if (!d) break
      if (moved.has(d.messageId)) {
        // moved in this run and dead-lettered again already: going round would never end
        held.push(d)
        break
      }
      const to = destination(d, opts.to)
      if (!to) {
        held.push(d)
        report.skipped.push({messageId: d.messageId, reason: 'no x-death-queue header (not dead-lettered by mq?): give --to QUEUE'})
        continue
      }
      if (to === dlq) {
        held.push(d)
        report.skipped.push({messageId: d.messageId, reason: `it would go back into ${dlq} itself`})
        continue
      }
      taken++
      moved.add(d.messageId)
      const duplicate = d.redelivered
      await window.acquire()
      void c
        .publish('', to, d.body, {headers: redriveHeaders(d, dlq, duplicate), messageId: d.messageId})
        .then(
          async () => {
            // only now: the republish is stored, so acking the dead letter cannot lose it
            await c.ackConfirmed(d.deliveryTag)
            report.moved++
            report.byDestination[to] = (report.byDestination[to] ?? 0) + 1
            if (duplicate) report.possibleDuplicates.push(d.messageId)
            opts.onMoved?.(d.messageId, to)
          },
          (error: unknown) => {
            if (error instanceof MqError && error.code === 'E_UNROUTABLE') {
              held.push(d)
              report.skipped.push({messageId: d.messageId, reason: `queue ${to} does not exist`})
            } else {
              held.push(d)
              failure ??= error
            }
          },
        )
        .catch((error: unknown) => {
          failure ??= error
        })
        .finally(window.release)
    }
    await window.idle()
  } finally {
    // the skipped dead letters go back to the head of the queue, in their order (nack puts each at the head)
    held.sort((a, b) => b.deliveryTag - a.deliveryTag)
    for (const d of held) c.nack(d.deliveryTag, true)
  }
  if (failure !== undefined) throw failure
  return report
}
