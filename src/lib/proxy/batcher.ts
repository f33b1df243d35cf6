import {MqError} from '../errors.js'
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
  resolve: (r: Registered) => void
  reject: (e: Error) => void
}

/**
 * Coalesces concurrent registrations into batch calls to the broker (one HTTPS request and one
 * store transaction for many messages). A batch leaves on the next turn of the event loop, so a
 * lone request waits for nothing; under load, requests that arrive while batches are in flight
 * ride in the next one.
 */
export class RegisterBatcher {
  private queue: Waiter[] = []
  private scheduled = false
  private inflight = 0

  constructor(
    private readonly broker: ApiClient,
    private readonly maxBatch = 500,
    private readonly maxInflight = 4,
  ) {}

  register(item: Registration): Promise<Registered> {
    return new Promise((resolve, reject) => {
      this.queue.push({item, reject, resolve})
      this.schedule()
    })
  }

  private schedule(): void {
    if (this.scheduled || this.inflight >= this.maxInflight || this.queue.length === 0) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      while (this.queue.length > 0 && this.inflight < this.maxInflight) {
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
      const r = await this.broker.call<{results: typeof results}>('POST', '/internal/messages/register', {messages: batch.map((w) => w.item)})
      results = r.results
      if (!Array.isArray(results) || results.length !== batch.length) throw new MqError('E_BROKER_PROTOCOL', 'The broker answered a batch with the wrong number of results.', {details: {status: 502}})
    } catch (error) {
      for (const w of batch) w.reject(error as Error)
      return
    }
    for (const [i, w] of batch.entries()) {
      const r = results[i]
      if (r.error) w.reject(new HttpError(r.status ?? 422, r.error.code, r.error.message, {hint: r.error.hint}))
      else w.resolve(r as Registered)
    }
  }
}
