/**
 * Who may import whom under src/lib (docs/architecture.md). The rules keep the roles apart: a
 * client can be written or changed without the server, and the broker core knows no pipeline.
 */
import assert from 'node:assert/strict'
import {mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join, relative, resolve, sep} from 'node:path'
import {test} from 'node:test'

import {ROOT} from '../../helpers/cli.js'

interface Rule {
  from: string
  forbidden: string[]
  why: string
}

// Read from the tree, so an area added later is covered by the wire rule without editing this list.
const ALL_AREAS = readdirSync(join(ROOT, 'src', 'lib'), {withFileTypes: true})
  .map((d) => (d.isDirectory() ? d.name : d.name.replace(/\.ts$/, '')))
  .filter((a) => !a.includes('.'))

export const RULES: Rule[] = [
  {forbidden: ['commands'], from: '*', why: 'the library never reaches back into the CLI'},
  {forbidden: ALL_AREAS.filter((a) => a !== 'util'), from: 'wire', why: 'the wire format stands alone, so a client in any language can be written from it'},
  {forbidden: ['broker', 'app', 'records', 'proxy', 'worker', 'relay'], from: 'client', why: 'the client library talks to a broker only through the wire format'},
  {forbidden: ['records', 'proxy', 'worker', 'relay', 'client', 'app', 'crypto', 'admin'], from: 'broker', why: 'the broker core knows no pipeline and no client; it cannot open envelopes'},
  {forbidden: ['broker', 'client', 'records', 'proxy', 'worker', 'relay', 'app'], from: 'health', why: 'health roll-up is shared by every server'},
  {forbidden: ['broker', 'app'], from: 'portal', why: 'the portal reaches the broker only over its HTTPS API'},
  {forbidden: ['app'], from: '*', why: 'only commands use the composition root'},
]

const SPEC = /(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]+)\1/g

function walk(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) walk(p, out)
    else if (name.endsWith('.ts')) out.push(p)
  }
  return out
}

/** 'broker' for src/lib/broker/x.ts, 'commands' for src/commands/..., 'errors' for src/lib/errors.ts */
function areaOf(src: string, file: string): string {
  const rel = relative(src, file).split(sep)
  if (rel[0] === 'commands') return 'commands'
  if (rel[0] !== 'lib') return rel[0]
  return rel.length > 2 ? rel[1] : rel[1].replace(/\.ts$/, '')
}

/** Every import under src/lib that breaks a rule, as "file -> target (why)". */
export function violations(src: string): string[] {
  const out: string[] = []
  for (const file of walk(join(src, 'lib'))) {
    const from = areaOf(src, file)
    const text = readFileSync(file, 'utf8')
    for (const m of text.matchAll(SPEC)) {
      const target = resolve(dirname(file), m[2])
      if (!target.startsWith(src)) continue
      const to = areaOf(src, target)
      if (to === from) continue
      for (const r of RULES) {
        if ((r.from === '*' || r.from === from) && r.forbidden.includes(to)) {
          out.push(`${relative(src, file)} -> ${m[2]} (${r.why})`)
        }
      }
    }
  }
  return out
}

test('src/lib keeps the import rules of docs/architecture.md', () => {
  assert.deepEqual(violations(join(ROOT, 'src')), [])
})

test('the checker catches each kind of violation (so the test above can fail)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mq-arch-'))
  try {
    const put = (p: string, body: string): void => {
      mkdirSync(dirname(join(dir, p)), {recursive: true})
      writeFileSync(join(dir, p), body)
    }
    put('lib/wire/protocol.ts', "import {Engine} from '../broker/engine.js'\n")
    put('lib/client/client.ts', "import type {QueueStats} from '../broker/engine.js'\n")
    put('lib/broker/plugins.ts', "import {createRecordsPlugin} from '../records/plugin.js'\nexport {x} from '../proxy/server.js'\nconst w = await import('../worker/worker.js')\n")
    put('lib/records/plugin.ts', "import Cmd from '../../commands/send.js'\n")
    put('lib/broker/engine.ts', "import {MessageIds} from '../wire/ids.js'\n")
    put('commands/send.ts', "import {x} from '../lib/broker/engine.js'\n")
    put('lib/portal/app.ts', "import {BrokerEngine} from '../broker/engine.js'\n")
    const v = violations(dir)
    assert.equal(v.length, 7, v.join('\n'))
    assert.ok(v.some((l) => l.startsWith(join('lib', 'portal', 'app.ts'))))
    assert.ok(v.some((l) => l.startsWith(join('lib', 'wire', 'protocol.ts'))))
    assert.ok(v.some((l) => l.startsWith(join('lib', 'client', 'client.ts'))))
    assert.equal(v.filter((l) => l.startsWith(join('lib', 'broker', 'plugins.ts'))).length, 3)
    assert.ok(v.some((l) => l.includes('commands/send.js')))
  } finally {
    rmSync(dir, {force: true, recursive: true})
  }
})
