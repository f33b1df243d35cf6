import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {test} from 'node:test'

import {parse} from 'yaml'

import {CONFIG_LEAVES} from '../../../src/lib/config/env.js'
import {SHIPPED_CONFIG} from '../../../src/lib/config/load.js'

test('config/mq.yaml documents every key of the schema (as a value or as a commented-out line)', () => {
  // a commented-out "# key: value" line documents a key without setting it: uncomment those to look them up
  const text = readFileSync(SHIPPED_CONFIG, 'utf8').replace(/^(\s*)# ([a-z_]+:(?:\s|$))/gm, '$1$2')
  const doc = parse(text) as Record<string, unknown>
  const missing = CONFIG_LEAVES.map((l) => l.path).filter((path) => {
    let node: unknown = doc
    for (const k of path) {
      if (node === null || typeof node !== 'object' || !(k in (node as object))) return true
      node = (node as Record<string, unknown>)[k]
    }
    return false
  })
  assert.deepEqual(missing.map((p) => p.join('.')), [])
})
