import {performance} from 'node:perf_hooks'

import type {ApiClient} from '../../../src/lib/http/client.js'

export interface Refusal {
  /** HTTP status; 0 = no answer (connection dropped, or none within the client's timeout) */
  status: number
  code?: string
  retryAfter?: string
  ms: number
}

/**
 * Clients that keep sending through the proxy while something is down: a new message every
 * `everyMs`, each retried with its own Idempotency-Key every `retryMs` until accepted (202), as
 * careful clients do. `accepted` holds every message id the proxy accepted, `refusals` every answer
 * that was not a 202, with how long it took.
 */
export function steadySenders(client: ApiClient, opts: {tag: string; everyMs: number; retryMs: number}) {
  const accepted: Promise<string>[] = []
  const refusals: Refusal[] = []
  let started = 0
  let acceptedCount = 0
  let timer: NodeJS.Timeout | undefined
  const one = async (k: number): Promise<string> => {
    for (;;) {
      const t = performance.now()
      const r = await client
        .request<{message_id?: string; error?: {code?: string}}>('POST', '/api/v1/messages', {message_body: `${opts.tag} message ${k}`, sender_number: '+4915200000000'}, {'idempotency-key': `${opts.tag}-${k}`})
        .catch(() => ({body: {} as {message_id?: string; error?: {code?: string}}, headers: {} as Record<string, string | string[] | undefined>, status: 0}))
      if (r.status === 202 && r.body.message_id) {
        acceptedCount++
        return r.body.message_id
      }
      refusals.push({code: r.body?.error?.code, ms: performance.now() - t, retryAfter: r.headers['retry-after'] as string | undefined, status: r.status})
      await new Promise((res) => setTimeout(res, opts.retryMs))
    }
  }
  return {
    accepted,
    /** how many messages were accepted so far */
    get acceptedCount() {
      return acceptedCount
    },
    refusals,
    start(): void {
      const next = () => accepted.push(one(started++))
      next()
      timer = setInterval(next, opts.everyMs)
    },
    /** n more messages at once, e.g. right before an outage, so some are accepted but not yet delivered */
    burst(n: number): void {
      for (let i = 0; i < n; i++) accepted.push(one(started++))
    },
    /** no new messages; those still retrying go on until accepted */
    stop(): void {
      clearInterval(timer)
    },
    get started() {
      return started
    },
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
