import type {FastifyInstance} from 'fastify'

import {REVOCATION_REASONS, type RevocationReason} from '../../pki/index.js'
import type {PortalDeps} from '../app.js'
import {audit, requireAdmin} from '../guard.js'

const NAME = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'

/**
 * GET /admin/certificates (the CA's inventory, ?status= ?type=), POST /admin/certificates/generate
 * (a bundle: certificate, private key, CA certificate; the key is not kept, so it is shown once)
 * and POST /admin/certificates/revoke (with a reason; the CRL is republished).
 */
export default async function certificateRoutes(app: FastifyInstance, deps: PortalDeps): Promise<void> {
  const {ca, store, tokens} = deps
  const admin = requireAdmin(tokens)

  app.get<{Querystring: {status?: string; type?: string}}>('/admin/certificates', {
    preHandler: admin,
    schema: {
      querystring: {
        additionalProperties: false,
        properties: {status: {enum: ['active', 'revoked', 'expired', ''], type: 'string'}, type: {enum: ['client', 'server', 'ca', 'e2e-enc', 'e2e-sign', ''], type: 'string'}},
        type: 'object',
      },
    },
  }, async (req) => {
    const {status, type} = req.query
    const certificates = ca.list().filter((c) => (!status || c.status === status) && (!type || c.type === type))
    return {certificates: certificates.sort((a, b) => a.not_after.localeCompare(b.not_after))}
  })

  app.post<{Body: {name: string; type?: 'client' | 'server'; days?: number}}>('/admin/certificates/generate', {
    preHandler: admin,
    schema: {
      body: {
        additionalProperties: false,
        properties: {days: {maximum: 36_500, minimum: 1, type: 'integer'}, name: {pattern: NAME, type: 'string'}, type: {default: 'client', enum: ['client', 'server'], type: 'string'}},
        required: ['name'],
        type: 'object',
      },
    },
  }, async (req, reply) => {
    const bundle = await deps.ca.issue(req.body.name, {days: req.body.days, type: req.body.type ?? 'client'})
    await audit(store, req, {data: {days: req.body.days ?? null, serial: bundle.certificate.serial, type: bundle.certificate.type}, event_type: 'cert.issue', identity: bundle.certificate.name})
    return reply.code(201).header('cache-control', 'no-store').send(bundle)
  })

  app.post<{Body: {name: string; reason?: RevocationReason; comment?: string}}>('/admin/certificates/revoke', {
    preHandler: admin,
    schema: {
      body: {
        additionalProperties: false,
        properties: {comment: {maxLength: 255, type: 'string'}, name: {maxLength: 128, minLength: 1, type: 'string'}, reason: {default: 'unspecified', enum: [...REVOCATION_REASONS], type: 'string'}},
        required: ['name'],
        type: 'object',
      },
    },
  }, async (req) => {
    const reason = req.body.reason ?? 'unspecified'
    const revoked = await deps.ca.revoke(req.body.name, reason)
    await audit(store, req, {data: {comment: req.body.comment ?? null, reason, serials: revoked.map((r) => r.serial)}, event_type: 'cert.revoke', identity: req.body.name, severity: 'warning'})
    return {reason, revoked}
  })
}
