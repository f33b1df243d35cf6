import type {IncomingMessage, ServerResponse} from 'node:http'

import {DataError, MqError, PermissionError, TempFailError, UnavailableError} from '../errors.js'

/**
 * The one JSON error shape of every mq HTTP endpoint (proxy, broker API plugins, worker):
 *   {"error": {"code": "E_SOMETHING", "message": "...", "hint": "Try this: ..."}}
 * with the HTTP status in the response line. Codes are stable; messages are for humans.
 */
export interface ErrorBody {
  error: {code: string; message: string; hint?: string; [k: string]: unknown}
}

/** An MqError that carries its HTTP status. */
export class HttpError extends MqError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
    opts: {hint?: string; headers?: Record<string, string>; extra?: Record<string, unknown>} = {},
  ) {
    super(code, message, {details: {status, ...opts.extra}, exit: status >= 500 ? 69 : status === 401 || status === 403 ? 77 : 65, hint: opts.hint})
    this.headers = opts.headers
  }

  readonly headers?: Record<string, string>
}

/** HTTP status for any error: explicit details.status, else by error class and code. */
export function statusOf(err: unknown): number {
  if (err instanceof HttpError) return err.status
  if (err instanceof MqError) {
    const s = err.details?.status
    if (typeof s === 'number') return s
    if (err.code === 'E_NOT_FOUND') return 404
    if (err instanceof DataError) return 422
    if (err instanceof PermissionError) return 403
    if (err instanceof UnavailableError || err instanceof TempFailError) return 503
    return 400
  }
  return 500
}

export function errorBody(err: unknown): ErrorBody {
  if (err instanceof MqError) {
    const extra = {...err.details}
    delete extra.status
    return {error: {code: err.code, message: err.message, ...(err.hint ? {hint: err.hint} : {}), ...extra}}
  }
  // never leak internals (stack, SQL, paths) to a client
  return {error: {code: 'E_INTERNAL', message: 'internal error'}}
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = Buffer.from(JSON.stringify(body))
  if (res.headersSent) return void res.end()
  res.writeHead(status, {'cache-control': 'no-store', 'content-length': String(data.length), 'content-type': 'application/json', ...headers})
  res.end(data)
}

export function sendError(res: ServerResponse, err: unknown): void {
  sendJson(res, statusOf(err), errorBody(err), err instanceof HttpError && err.headers ? err.headers : {})
}

/**
 * Reads a request body up to `limit` bytes; larger bodies fail with 413 as soon as the limit
 * is passed (by Content-Length or by counting), without buffering the rest.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'])
    if (Number.isFinite(declared) && declared > limit) {
      req.resume()
      return reject(new HttpError(413, 'E_TOO_LARGE', `The request body is ${declared} bytes; the limit is ${limit}.`, {hint: 'Try this: send a shorter message.'}))
    }
    const chunks: Buffer[] = []
    let size = 0
    let done = false
    req.on('data', (c: Buffer) => {
      if (done) return
      size += c.length
      if (size > limit) {
        done = true
        req.resume()
        reject(new HttpError(413, 'E_TOO_LARGE', `The request body exceeds ${limit} bytes.`, {hint: 'Try this: send a shorter message.'}))
        return
      }
      chunks.push(c)
    })
    req.on('end', () => {
      if (!done) resolve(Buffer.concat(chunks, size))
      done = true
    })
    req.on('error', (e) => {
      if (!done) reject(e)
      done = true
    })
  })
}

/** Parses a JSON object body; 415 for another content type, 400 for bad JSON or a non-object. */
export function parseJsonObject(body: Buffer, contentType: string | undefined, requireType = true): Record<string, unknown> {
  if (requireType && !/^application\/json\s*(;|$)/i.test(contentType ?? '')) {
    throw new HttpError(415, 'E_CONTENT_TYPE', `Content-Type must be application/json, not ${JSON.stringify(contentType ?? '')}.`, {hint: "Try this: send the header 'Content-Type: application/json'."})
  }
  let v: unknown
  try {
    v = JSON.parse(body.toString('utf8'))
  } catch {
    throw new HttpError(400, 'E_BAD_JSON', 'The request body is not valid JSON.', {hint: 'Try this: check the quoting of your JSON body.'})
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new HttpError(400, 'E_BAD_JSON', 'The request body must be a JSON object.')
  return v as Record<string, unknown>
}
