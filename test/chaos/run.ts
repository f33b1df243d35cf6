#!/usr/bin/env node
/**
 * npm run chaos [-- --scenario NAME[,NAME]] [--scale F] [--json] [--list]
 * Runs the chaos battery (test/chaos/scenarios.ts) one scenario at a time, each on its own private
 * servers, and prints one ledger line per scenario. Exits 1 if any verdict is FAIL.
 */
import {parseArgs} from 'node:util'

import {type LedgerLine, formatLine} from './ledger.js'
import {SCENARIOS} from './scenarios.js'

const {values} = parseArgs({options: {json: {type: 'boolean'}, list: {type: 'boolean'}, scale: {type: 'string'}, scenario: {type: 'string'}}})
if (values.list) {
  for (const s of SCENARIOS) console.log(`${s.name.padEnd(24)} ${s.what}${s.exercises ? ` [issue 18 failure ${s.exercises}]` : ''}`)
  process.exit(0)
}
const scale = values.scale === undefined ? 1 : Number(values.scale)
if (!(scale > 0 && scale <= 1)) {
  console.error('--scale must be in (0, 1]')
  process.exit(2)
}
const wanted = values.scenario ? values.scenario.split(',') : SCENARIOS.map((s) => s.name)
const unknown = wanted.filter((w) => !SCENARIOS.some((s) => s.name === w))
if (unknown.length) {
  console.error(`unknown scenario ${unknown.join(', ')}; --list shows them`)
  process.exit(2)
}
const lines: LedgerLine[] = []
for (const s of SCENARIOS.filter((x) => wanted.includes(x.name))) {
  process.stderr.write(`chaos: ${s.name}: ${s.what}\n`)
  let l: LedgerLine
  try {
    l = await s.run(scale)
  } catch (error) {
    l = {confirmed: 0, corrupt: 0, duplicated: 0, lost: 0, notes: [`scenario error: ${(error as Error).message.split('\n')[0]}`], received: 0, scenario: s.name, seconds: 0, sent: 0, verdict: 'FAIL'}
  }
  if (l.verdict === 'FAIL' && s.exercises) l.notes.push(`exercises issue 18 failure ${s.exercises}`)
  lines.push(l)
  if (!values.json) console.log(formatLine(l))
}
if (values.json) console.log(JSON.stringify(lines.map((l) => ({...l, scale})), null, 2))
process.exit(lines.every((l) => l.verdict === 'PASS') ? 0 : 1)
