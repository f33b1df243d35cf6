#!/usr/bin/env node
/**
 * npm run fuzz [-- --runs N] [--parser NAME[,NAME]] [--seed N] [--timeout-ms N] [--memory-mb N] [--json] [--out DIR]
 * Runs each parser's harness for N inputs (default 1,000,000), one parser at a time, and prints
 * one line per parser: inputs, inputs/s, crashes, hangs, memory failures, corpus size, peak heap.
 * Exits 1 if any parser failed; failing inputs are written to --out (default fuzz-findings/). SIGINT or
 * SIGTERM stops it early: the current parser is printed with what it did (verdict STOPPED), exit 130.
 */
import {parseArgs} from 'node:util'

import {PARSERS, type FuzzResult, fuzz} from './engine.js'

const {values} = parseArgs({
  options: {
    json: {type: 'boolean'},
    'memory-mb': {type: 'string'},
    out: {type: 'string'},
    parser: {type: 'string'},
    runs: {type: 'string'},
    seed: {type: 'string'},
    'timeout-ms': {type: 'string'},
  },
})
const num = (v: string | undefined, d: number) => {
  if (v === undefined) return d
  const n = Number(v.replaceAll('_', ''))
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`not a positive number: ${v}`)
    process.exit(2)
  }
  return n
}
const parsers = values.parser ? values.parser.split(',') : PARSERS
for (const p of parsers) {
  if (!PARSERS.includes(p)) {
    console.error(`unknown parser ${p}: one of ${PARSERS.join(', ')}`)
    process.exit(2)
  }
}
const runs = num(values.runs, 1_000_000)
// Ctrl-C or SIGTERM stops the current parser and prints what was done (verdict STOPPED), skipping the rest
const interrupt = new AbortController()
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupt.abort())
const results: FuzzResult[] = []
const line = (r: FuzzResult) =>
  `${r.parser.padEnd(14)} inputs ${String(r.inputs).padStart(9)}  ${String(r.inputs_per_s).padStart(7)}/s  ${String(r.seconds).padStart(7)} s  crashes ${r.crashes}  hangs ${r.hangs}  memory ${r.memory_failures}  corpus ${r.corpus}  peak heap ${r.peak_heap_mb} MB  ${r.verdict}`
for (const parser of parsers) {
  if (interrupt.signal.aborted) break
  const tty = process.stderr.isTTY
  let said = Date.now()
  const r = await fuzz({
    memoryMb: num(values['memory-mb'], 512),
    onProgress: (d, t) => {
      if (tty) process.stderr.write(`\r${parser}: ${d}/${t}`)
      else if (Date.now() - said >= 60_000) {
        // a run in the background (nohup, CI) still shows it is alive, once a minute
        said = Date.now()
        process.stderr.write(`${new Date().toISOString()} ${parser}: ${d}/${t}\n`)
      }
    },
    outDir: values.out ?? 'fuzz-findings',
    parser,
    runs,
    seed: values.seed ? num(values.seed, 1) : undefined,
    signal: interrupt.signal,
    timeoutMs: num(values['timeout-ms'], 2000),
  })
  if (tty) process.stderr.write('\r\x1b[K')
  results.push(r)
  if (!values.json) {
    console.log(line(r))
    for (const f of r.findings.slice(0, 10)) console.log(`  ${f.kind}: ${f.message.split('\n').join('\n    ')}${f.file ? `\n    input: ${f.file}` : ''}`)
  }
}
if (values.json) console.log(JSON.stringify(results, null, 2))
process.exit(interrupt.signal.aborted ? 130 : results.every((r) => r.verdict === 'PASS') ? 0 : 1)
