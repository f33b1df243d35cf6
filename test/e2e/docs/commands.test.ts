/**
 * docs/commands.md is generated from the commands' help (npm run docs:commands): regenerate it into a
 * temporary file and compare, so a command added or changed without a regeneration fails CI.
 */
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'

import {ROOT} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

test('docs/commands.md is the reference generated from the current commands (npm run docs:commands)', () => {
  const tmp = tempHome('mq-docs-check-')
  try {
    const fresh = join(tmp.dir, 'commands.md')
    const r = spawnSync(process.execPath, [join(ROOT, 'scripts', 'docs-commands.js'), '--out', fresh], {cwd: ROOT, encoding: 'utf8', timeout: 120_000})
    assert.equal(r.status, 0, r.stderr)
    const generated = readFileSync(fresh, 'utf8')
    const committed = readFileSync(join(ROOT, 'docs', 'commands.md'), 'utf8')
    // every command of the manifest has its section
    const manifest = JSON.parse(readFileSync(join(ROOT, 'oclif.manifest.json'), 'utf8')) as {commands: Record<string, {hidden?: boolean}>}
    for (const [id, c] of Object.entries(manifest.commands)) if (!c.hidden) assert.match(generated, new RegExp(`^## \`mq ${id.replaceAll(':', ' ')}\\b`, 'm'), id)
    if (generated !== committed) {
      const a = committed.split('\n')
      const b = generated.split('\n')
      const line = a.findIndex((l, i) => l !== b[i])
      assert.fail(`docs/commands.md is stale (first difference at line ${line + 1}: ${JSON.stringify(a[line])} vs ${JSON.stringify(b[line])}); run: npm run docs:commands`)
    }
  } finally {
    tmp.cleanup()
  }
})
