import {HttpError, parseJsonObject} from '../http/errors.js'
import {PHONE_RE, assertBodyLength} from '../records/crypto.js'

const IDEM_RE = /^[\x21-\x7e]{1,255}$/

export interface IngestRequest {
  sender: string
  text: string
  metadata?: Record<string, unknown>
  /** the Idempotency-Key header, checked */
  idem?: string
}

/**
 * Checks an ingest request body (POST /api/v1/messages) and its Idempotency-Key header. Pure, so
 * the fuzzer can drive it: every bad input is an HttpError (4xx), never anything else.
 */
export function validateIngest(body: Buffer, contentType: string | undefined, idemHeader: string | string[] | undefined, maxBodyChars: number): IngestRequest {
  const obj = parseJsonObject(body, contentType)
  const sender = obj.sender_number
  const text = obj.message_body
  const metadata = obj.metadata
  if (typeof sender !== 'string' || !PHONE_RE.test(sender)) {
    throw new HttpError(422, 'E_SENDER_NUMBER', 'sender_number must be an E.164 number: "+", a non-zero digit, then 1-14 digits (e.g. +4915200000000).', {extra: {field: 'sender_number'}})
  }
  if (typeof text !== 'string' || text.trim() === '') throw new HttpError(422, 'E_BODY_BLANK', 'message_body must be a non-blank string.', {extra: {field: 'message_body'}})
  assertBodyLength(text, maxBodyChars)
  if (metadata !== undefined && metadata !== null && (typeof metadata !== 'object' || Array.isArray(metadata))) {
    throw new HttpError(422, 'E_METADATA', 'metadata must be a JSON object.', {extra: {field: 'metadata'}})
  }
  const idem = Array.isArray(idemHeader) ? idemHeader[0] : idemHeader
  if (idem !== undefined && !IDEM_RE.test(idem)) throw new HttpError(400, 'E_IDEMPOTENCY_KEY', 'Idempotency-Key must be 1-255 printable ASCII characters without spaces.')
  return {idem, metadata: (metadata ?? undefined) as Record<string, unknown> | undefined, sender, text}
}
