import {Agent, request} from 'node:https'
import type {ConnectionOptions} from 'node:tls'

import {MqError, NotFoundError, PermissionError, TempFailError, UnavailableError} from '../errors.js'
import {clientLogger} from '../log.js'

export interface JsonResponse<T = unknown> {
  status: number
  body: T
  headers: Record<string, string | string[] | undefined>
}

/**
 * A small HTTPS JSON client with mutual TLS and keep-alive, for talking to the broker's API
 * (proxy and worker internal calls, operator commands). Connection failures and timeouts become
 * UnavailableError so callers can answer 503 or retry.
 */
export class ApiClient {
  private readonly agent: Agent
  private readonly base: URL
  /** the first request says where it goes (at debug level), not every one */
  private announced = false

  constructor(
    baseUrl: string,
    tls: ConnectionOptions,
    private readonly timeoutMs = 10_000,
    maxSockets = 64,
  ) {
    // a mistyped --api / MQ_API / client.api is the user's input, not an internal error
    if (!URL.canParse(baseUrl) || !/^https:$/.test(new URL(baseUrl).protocol)) {
      throw new MqError('E_BAD_URL', `${JSON.stringify(baseUrl)} is not an https:// URL.`, {exit: 2, hint: "Try this: --api https://HOST:PORT with the broker's API port (mq config show: client.api)"})
    }
    this.base = new URL(baseUrl)
    // Our CA signs every server; the host name is not what we trust, the CA is.
    this.agent = new Agent({...tls, checkServerIdentity: () => undefined, keepAlive: true, maxSockets} as never)
  }

  request<T = unknown>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<JsonResponse<T>> {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
    const url = new URL(path, this.base)
    const log = clientLogger()
    if (!this.announced) {
      this.announced = true
      log?.debug('connecting to the API', {timeout_ms: this.timeoutMs, url: this.base.origin})
    }
    const failed = (e: Error) => {
      const err = unavailable(this.base, e)
      log?.debug('API request failed', {code: err.code, method, reason: err.message, url: url.href})
      return err
    }
    return new Promise((resolve, reject) => {
      const fail = (e: Error) => reject(failed(e))
      const req = request(
        url,
        {
          agent: this.agent,
          headers: {accept: 'application/json', ...(data ? {'content-length': String(data.length), 'content-type': 'application/json'} : {}), ...headers},
          method,
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('error', fail)
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8')
            let parsed: unknown = text
            if (/json/.test(String(res.headers['content-type'] ?? ''))) {
              try {
                parsed = JSON.parse(text)
              } catch {}
            }
            resolve({body: parsed as T, headers: res.headers, status: res.statusCode ?? 0})
          })
        },
      )
      req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${this.timeoutMs} ms`), {code: 'E_API_TIMEOUT'})))
      req.on('error', fail)
      req.end(data)
    })
  }

  /** Like request(), but non-2xx answers throw an MqError carrying the server's code and status. */
  async call<T = unknown>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<T> {
    const r = await this.request<T>(method, path, body, headers)
    if (r.status >= 200 && r.status < 300) return r.body
    throw responseError(r)
  }

  close(): void {
    this.agent.destroy()
  }
}

export function responseError(r: JsonResponse): MqError {
  const e = (r.body as {error?: {code?: string; message?: string; hint?: string}})?.error
  const code = e?.code ?? `E_HTTP_${r.status}`
  const msg = e?.message ?? `HTTP ${r.status}`
  const opts = {details: {status: r.status}, hint: e?.hint}
  if (r.status === 401 || r.status === 403) return new PermissionError(code, msg, opts)
  // the server's "no such message/user/client": exit 66 as for a queue or a certificate, not "bad input"
  if (r.status === 404 && code === 'E_NOT_FOUND') return new NotFoundError(code, msg, opts)
  if (r.status >= 500 || r.status === 429) return new UnavailableError(code, msg, opts)
  return new MqError(code, msg, {...opts, exit: 65})
}

function unavailable(base: URL, e: Error): MqError {
  // a server that accepted the connection but did not answer in time: retrying may work (75), unlike a
  // refused connection (69)
  if ((e as NodeJS.ErrnoException).code === 'E_API_TIMEOUT') {
    return new TempFailError('E_API_TIMEOUT', `No answer from ${base.origin} ${e.message.replace(/^no answer /, '')}.`, {cause: e, hint: 'Try this: check that the server at that address is an mq API and not overloaded, or retry.'})
  }
  if (/CRL has expired/i.test(e.message)) {
    return new UnavailableError('E_CRL_EXPIRED', `TLS with ${base.host} failed: ${e.message}`, {cause: e, hint: 'Try this: mq cert crl (republishes pki/crl.pem); until then TLS clients and servers refuse handshakes.'})
  }
  // pointed at a service that is not an HTTPS API (the broker's messaging port, a plain TCP port):
  // E_WRONG_SERVICE, which callers that know the config rephrase as "that port is ..."
  if (/wrong version number|packet length too long|unknown protocol/i.test(e.message)) {
    return new UnavailableError('E_WRONG_SERVICE', `${base.host} does not speak TLS, so it is not an HTTPS API`, {cause: e, details: {port: Number(base.port || 443), seen: 'plain'}, hint: 'Try this: --api https://HOST:PORT with the broker\'s API port (broker.api_port)'})
  }
  if (/^HPE_/.test(String((e as NodeJS.ErrnoException).code)) || /Parse Error/i.test(e.message)) {
    return new UnavailableError('E_WRONG_SERVICE', `${base.host} did not answer HTTP, so it is not an HTTPS API`, {cause: e, details: {port: Number(base.port || 443), seen: 'other'}, hint: 'Try this: --api https://HOST:PORT with the broker\'s API port (broker.api_port)'})
  }
  const tlsRefused = /certificate|alert|handshake|SSL/i.test(e.message)
  if (tlsRefused) {
    return new PermissionError('E_TLS', `${base.host} refused our TLS client certificate or we refused its: ${e.message}`, {
      cause: e,
      hint: 'Try this: check that the identity certificate is issued by this CA and not revoked (mq cert list).',
    })
  }
  return new UnavailableError('E_API_UNAVAILABLE', `Cannot reach ${base.origin}: ${e.message}`, {cause: e, hint: 'Try this: check that the server runs and the URL is right.'})
}
