import {performance} from 'node:perf_hooks'

import {MqError, UnavailableError} from '../errors.js'
import type {ApiClient} from '../http/client.js'
import {HttpError} from '../http/errors.js'

export interface Registration {
  message_id: string
  client_id: string
  client_serial: string
  sender_number: string
  message_body: string
  metadata?: unknown
}

export interface Registered {
  message_id: string
  client_id: string
  queued_at: string
  status: string
  created: boolean
}

interface Waiter {
  item: Registration
  /** when register() was called (performance.now()) */
  at: number
  resolve: (r: Registered) => void
  reject: (e: Error) => void
  timer?: NodeJS.Timeout
  done?: boolean
}

/**
 * Coalesces concurrent registrations into batch calls to the broker (one HTTPS request and one
 * store transaction for many messages). With nothing in flight a batch leaves on the next turn of
 * the event loop, so a lone request waits for nothing. While a batch is in flight, the next one
 * leaves when one in flight returns, or earlier once busyBatch registrations wait: the batch grows
 * with the load instead of splitting it into several small calls, each paying the broker's
 * per-call cost (HTTPS request, route, transaction and commit) and the proxy's client cost.
 *
 * Each registration has a deadline (deadlineMs from its arrival): a client of the proxy gets its 503
 * within it even when the broker hangs and batches queue up behind those in flight. One still waiting
 * for a slot at its deadline is never sent. One in flight may still be registered by the broker: the
 * broker fails what it commits after the deadline it was sent, but its answer may reach us after our
 * own timer fired (a loaded machine, a slow network). Such a registration was answered 503 here, so
 * it is reported back as not accepted (abandon), and its record ends failed instead of queued for the
 * reconciler to deliver. A retry with the same Idempotency-Key revives it.
 */
export class RegisterBatcher {
  private queue: Waiter[] = []
  private scheduled = false
  private inflight = 0

  constructor(
    private readonly broker: ApiClient,
    private readonly maxBatch = 500,
    private readonly maxInflight = 4,
    private readonly deadlineMs = 0,
    private readonly onAbandonError?: (error: Error, ids: string[]) => void,
    private readonly busyBatch = 64,
  ) {}

  register(item: Registration): Promise<Registered> {
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        at: performance.now(),
        item,
        reject: (e) => {
          if (w.done) return
          w.done = true
          clearTimeout(w.timer)
          reject(e)
        },
        resolve: (r) => {
          if (w.done) return
          w.done = true
          clearTimeout(w.timer)
          resolve(r)
        },
      }
      if (this.deadlineMs > 0) {
        w.timer = setTimeout(() => {
          const i = this.queue.indexOf(w)
          if (i >= 0) this.queue.splice(i, 1)
          w.reject(new UnavailableError('E_API_UNAVAILABLE', `The broker did not record the message within ${this.deadlineMs} ms.`, {hint: 'Try this: retry in a moment.'}))
        }, this.deadlineMs)
      }
      this.queue.push(w)
      this.schedule()
    })
  }

  /** whether a batch may leave now: the first at once, more beside it only once busyBatch wait */
  private ready(): boolean {
    return this.queue.length > 0 && this.inflight < this.maxInflight && (this.inflight === 0 || this.queue.length >= this.busyBatch)
  }

  private schedule(): void {
    if (this.scheduled || !this.ready()) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      while (this.ready()) {
        const batch = this.queue.splice(0, this.maxBatch)
        this.inflight++
        void this.send(batch).finally(() => {
          this.inflight--
          this.schedule()
        })
      }
    })
  }

  private async send(batch: Waiter[]): Promise<void> {
    let results: ({error?: {code: string; message: string; hint?: string}; status?: number} & Partial<Registered>)[]
    try {
      // how long the earliest of these requests still waits for its answer: the broker fails (never
      // queues) what its store commits after that, because that request was answered 503
      const deadline = this.deadlineMs > 0 ? {deadline_ms: Math.max(0, Math.floor(Math.min(...batch.map((w) => w.at + this.deadlineMs)) - performance.now()))} : {}
      const r = await this.broker.call<{results: typeof results}>('POST', '/internal/messages/register', {messages: batch.map((w) => w.item), ...deadline})
      results = r.results
      if (!Array.isArray(results) || results.length !== batch.length) throw new MqError('E_BROKER_PROTOCOL', 'The broker answered a batch with the wrong number of results.', {details: {status: 502}})
    } catch (error) {
      for (const w of batch) w.reject(error as Error)
      // no answer (timeout, connection lost): the broker may still have committed them; an answer
      // with an HTTP status means it decided, and failed late ones itself
      if (!isAnswered(error)) this.abandon(batch.map((w) => w.item.message_id))
      return
    }
    const abandoned: string[] = []
    for (const [i, w] of batch.entries()) {
      const r = results[i]
      if (r.error) w.reject(new HttpError(r.status ?? 422, r.error.code, r.error.message, {hint: r.error.hint}))
      // registered, but this request was already answered 503 at its deadline
      else if (w.done) {
        if (r.created) abandoned.push(w.item.message_id)
      } else w.resolve(r as Registered)
    }
    if (abandoned.length > 0) this.abandon(abandoned)
  }

  /** Tells the broker these registrations were refused (only records still queued change); retried a few times. */
  private abandon(ids: string[], attempt = 0): void {
    this.broker.call('POST', '/internal/messages/not-accepted', {message_ids: ids}).catch((error: Error) => {
      if (attempt >= ABANDON_RETRIES) {
        this.onAbandonError?.(error, ids)
        return
      }
      setTimeout(() => this.abandon(ids, attempt + 1), 250 * 2 ** attempt).unref()
    })
  }
}

const ABANDON_RETRIES = 5

/** An error carrying the broker's HTTP answer (details.status, as HttpError and responseError set it), as opposed to no answer at all. */
function isAnswered(error: unknown): boolean {
  const status = (error as {details?: {status?: unknown}})?.details?.status
  return typeof status === 'number' && status > 0
}
