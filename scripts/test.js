#!/usr/bin/env node
// Runs the compiled test suites with node's own test runner. Usage: node scripts/test.js [unit|integration|e2e ...]
// Unit tests first (fast, pure), then integration (real servers), then e2e (the built CLI as a subprocess),
// except the few long waiting files below.
import {spawnSync} from 'node:child_process'
import {existsSync, readdirSync, statSync} from 'node:fs'
import {join} from 'node:path'

const suites = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['unit', 'integration', 'e2e']
const files = []
const walk = (dir) => {
  if (!existsSync(dir)) return
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) walk(p)
    else if (name.endsWith('.test.js')) files.push(p)
  }
}
for (const s of suites) walk(join('dist', 'test', s))
// Files that mostly wait (30 s outages) start first, so they overlap the rest of the suite instead of
// running at its end; they take two of the slots, the others start on the third.
const START_FIRST = ['e2e/pipeline/broker-outage.test.js', 'e2e/pipeline/mysql-outage.test.js']
const first = (f) => START_FIRST.some((s) => f.endsWith(join(...s.split('/'))))
files.sort((a, b) => Number(first(b)) - Number(first(a)))
if (files.length === 0) {
  console.error(`no compiled tests under dist/test/{${suites.join(',')}}: run npm run build first`)
  process.exit(1)
}
const concurrency = process.env.MQ_TEST_CONCURRENCY ?? '3'
const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, '--test-timeout=300000', '--test-reporter=spec', ...files], {stdio: 'inherit', env: {...process.env, FORCE_COLOR: '0'}})
process.exit(r.status ?? 1)
