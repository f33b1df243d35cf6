import type {FastifyError} from 'fastify'

import {HttpError} from './errors.js'

/**
 * JSON-schema validation failures of the broker's API in our coded error shape. A schema says
 * which code a failed check answers with through the `x-error` keyword ({code, message, status?}),
 * for every check but a missing field or a wrong type, which have codes of their own:
 *   E_FIELD_MISSING "Field X is required."   E_FIELD_TYPE "Field X must be a string."
 *   E_FIELD_TOO_LONG "Field X is longer than N characters."
 * A required field sent as null counts as missing (as absent optional ones may be null).
 */
export interface SchemaErrorSpec {
  code: string
  message: string
  status?: number
}

/** ajv options that make the above work: the x-error keyword, the failing schema and value in each error, no type coercion */
export const API_AJV_OPTIONS = {allErrors: false, coerceTypes: false, keywords: ['x-error'], verbose: true}

interface ValidationIssue {
  keyword: string
  instancePath: string
  params: Record<string, unknown>
  message?: string
  data?: unknown
  parentSchema?: {type?: string | string[]; 'x-error'?: SchemaErrorSpec}
}

export function validationError(issues: ValidationIssue[], context = 'body'): HttpError {
  const e = issues[0]
  const field = e.keyword === 'required' ? String(e.params.missingProperty) : e.instancePath.split('/').filter(Boolean).pop() ?? context
  const spec = e.parentSchema?.['x-error']
  if (e.keyword === 'required' || (e.keyword === 'type' && e.data === null)) return new HttpError(422, 'E_FIELD_MISSING', `Field ${field} is required.`)
  if (spec && e.keyword !== 'type') return new HttpError(spec.status ?? 422, spec.code, spec.message)
  if (e.keyword === 'type') {
    const types = [e.parentSchema?.type ?? e.params.type].flat().filter((t) => t !== 'null')
    if (spec && !types.includes('string')) return new HttpError(spec.status ?? 422, spec.code, spec.message)
    return new HttpError(422, 'E_FIELD_TYPE', `Field ${field} must be ${types.includes('object') ? 'a JSON object' : types.includes('integer') ? 'a non-negative integer' : `a ${types[0]}`}.`)
  }
  if (e.keyword === 'maxLength') return new HttpError(422, 'E_FIELD_TOO_LONG', `Field ${field} is longer than ${e.params.limit} characters.`)
  return new HttpError(422, 'E_VALIDATION', `Field ${field} ${e.message ?? 'is invalid'}.`)
}

/** Fastify's own request errors (unparsable content type, bad URL...) as an HttpError; undefined for anything else. */
export function requestError(err: FastifyError): HttpError | undefined {
  if (err.validation) return validationError(err.validation as never, err.validationContext)
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new HttpError(415, 'E_CONTENT_TYPE', 'The Content-Type header is not valid.')
  if (typeof err.code === 'string' && err.code.startsWith('FST_') && typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) return new HttpError(err.statusCode, 'E_BAD_REQUEST', err.message)
  return undefined
}
