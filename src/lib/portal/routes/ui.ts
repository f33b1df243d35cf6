import {readFileSync, readdirSync} from 'node:fs'
import {extname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

import type {FastifyInstance} from 'fastify'

import {HttpError} from '../../http/errors.js'

/** The web UI's files, shipped in the package (web/portal): no CDN, no build step. */
export const UI_DIR = fileURLToPath(new URL('../../../../../web/portal/', import.meta.url))

const TYPES: Record<string, string> = {
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
}

/**
 * GET / (the single page; its views are #/routes) and GET /assets/<file>. The files are read once
 * at start into a fixed map, so a request can only ever name one of them.
 */
export default async function uiRoutes(app: FastifyInstance): Promise<void> {
  const files = new Map<string, {body: Buffer; type: string}>()
  for (const name of readdirSync(join(UI_DIR, 'assets'))) {
    const type = TYPES[extname(name)]
    if (type) files.set(name, {body: readFileSync(join(UI_DIR, 'assets', name)), type})
  }
  const index = readFileSync(join(UI_DIR, 'index.html'))

  app.get('/', async (_req, reply) => reply.type(TYPES['.html']).header('cache-control', 'no-cache').send(index))
  app.get<{Params: {file: string}}>('/assets/:file', async (req, reply) => {
    const f = files.get(req.params.file)
    if (!f) throw new HttpError(404, 'E_NOT_FOUND', `No file ${req.params.file}.`)
    return reply.type(f.type).header('cache-control', 'no-cache').send(f.body)
  })
  app.get('/favicon.ico', async (_req, reply) => reply.code(204).send())
}
