#!/usr/bin/env node
// Runs the compiled test suites with node's own test runner. Usage: node scripts/test.js [unit|integration|e2e ...]
// The long files go first so that the last slots are filled by short ones: e2e (the built CLI as a
// subprocess), then integration (real servers), then unit (fast, pure).
import {existsSync, readdirSync, statSync} from 'node:fs'
import {join, relative} from 'node:path'
import {PassThrough} from 'node:stream'
import {run} from 'node:test'
import {spec} from 'node:test/reporters'

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
for (const s of ['e2e', 'integration', 'unit'].filter((s) => suites.includes(s))) walk(join('dist', 'test', s))
for (const s of suites.filter((s) => !['e2e', 'integration', 'unit'].includes(s))) walk(join('dist', 'test', s))
if (files.length === 0) {
  console.error(`no compiled tests under dist/test/{${suites.join(',')}}: run npm run build first`)
  process.exit(1)
}
// Files that mostly wait (30 s outages) run beside the others, each in a slot of its own, so their
// waits take no slot from the files that need the CPU. `node --test FILES` cannot do this, and it
// sorts the files by name (node 20), so run() is given the two lists in our order.
const WAITING = ['e2e/pipeline/broker-outage.test.js', 'e2e/pipeline/mysql-outage.test.js']
const waits = (f) => WAITING.some((s) => f.endsWith(join(...s.split('/'))))
const concurrency = Number(process.env.MQ_TEST_CONCURRENCY ?? '3')
const timeout = 300_000
process.env.FORCE_COLOR = '0'

const events = new PassThrough({objectMode: true})
const streams = [run({concurrency, files: files.filter((f) => !waits(f)), timeout})]
if (files.some(waits)) streams.push(run({concurrency: WAITING.length, files: files.filter(waits), timeout}))
const perFile = new Map()
const count = {cancelled: 0, fail: 0, pass: 0, skipped: 0, todo: 0}
const started = performance.now()
let open = streams.length
for (const s of streams) {
  s.on('data', (e) => {
    // each run() ends with its own totals: the totals of the whole suite are printed below instead
    if (e.type === 'test:diagnostic' && e.data.nesting === 0 && e.data.file === undefined) return
    if (e.type === 'test:pass' || e.type === 'test:fail') {
      const {details, file, nesting, skip, todo} = e.data
      if (nesting === 0 && file) perFile.set(file, (perFile.get(file) ?? 0) + (details.duration_ms ?? 0))
      // a suite counts only when it failed itself (a before() hook), not through its tests
      if (details.type === 'suite' && e.type === 'test:fail' && details.error?.failureType !== 'subtestsFailed') count.fail++
      else if (details.type !== 'suite') {
        if (skip) count.skipped++
        else if (todo) count.todo++
        else if (e.type === 'test:pass') count.pass++
        else if (details.error?.failureType === 'cancelledByParent') count.cancelled++
        else count.fail++
      }
      if (e.type === 'test:fail' && !todo) process.exitCode = 1
    }
    events.write(e)
  })
  s.on('end', () => --open === 0 && events.end())
}
const out = events.compose(new spec())
out.pipe(process.stdout, {end: false})
out.on('end', () => {
  const slowest = [...perFile].sort((a, b) => b[1] - a[1]).slice(0, 10)
  const lines = [
    `tests ${count.pass + count.fail + count.cancelled + count.skipped + count.todo}, pass ${count.pass}, fail ${count.fail}, cancelled ${count.cancelled}, skipped ${count.skipped}, todo ${count.todo}`,
    `wall ${((performance.now() - started) / 1000).toFixed(1)} s; slowest files (sum of their top-level tests):`,
    ...slowest.map(([f, ms]) => `  ${(ms / 1000).toFixed(1).padStart(6)} s  ${relative(join(process.cwd(), 'dist', 'test'), f)}`),
  ]
  process.stdout.write(lines.map((l) => `ℹ ${l}`).join('\n') + '\n')
})
