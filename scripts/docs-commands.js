#!/usr/bin/env node
// Writes the command reference, docs/commands.md, from every command's help with `oclif readme`.
// Usage: node scripts/docs-commands.js [--out FILE]   (npm run docs:commands builds first, then runs this)
// The reference is generated, never edited by hand: test/e2e/docs/commands.test.ts regenerates it into a
// temporary file and fails when docs/commands.md differs, so a command whose help changed without a
// regeneration is caught in CI.
import {spawnSync} from 'node:child_process'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {createRequire} from 'node:module'
import {tmpdir} from 'node:os'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const i = process.argv.indexOf('--out')
const out = i > 0 ? resolve(process.argv[i + 1]) : join(root, 'docs', 'commands.md')

const HEADER = `# Command reference

Every \`mq\` command with its usage, flags and examples, as \`mq COMMAND --help\` prints them. Generated from the
commands' own help by \`npm run docs:commands\` (\`oclif readme\`); do not edit by hand: CI fails when this file
is stale.

<!-- commands -->
<!-- commandsstop -->
`

// oclif readme fills in the markers of an existing file; it works on a scratch copy so a failed run leaves
// docs/commands.md as it was
const dir = mkdtempSync(join(tmpdir(), 'mq-docs-'))
try {
  const scratch = join(dir, 'commands.md')
  writeFileSync(scratch, HEADER)
  const oclif = join(dirname(createRequire(import.meta.url).resolve('oclif/package.json')), 'bin', 'run.js')
  const r = spawnSync(process.execPath, [oclif, 'readme', '--readme-path', scratch, '--no-source-links', '--no-aliases'], {
    cwd: root,
    encoding: 'utf8',
    // no update check against the registry: the reference must build offline; one width, whatever the
    // terminal, so the same commands always give the same file
    env: {...process.env, COLUMNS: '120', OCLIF_COLUMNS: '120', OCLIF_SKIP_NEW_VERSION_CHECK: 'true'},
  })
  if (r.status !== 0) {
    process.stderr.write(r.stdout + r.stderr)
    process.exit(r.status ?? 1)
  }
  writeFileSync(out, readFileSync(scratch, 'utf8'))
  process.stderr.write(`wrote ${out}\n`)
} finally {
  rmSync(dir, {force: true, recursive: true})
}
