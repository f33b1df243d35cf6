import assert from 'node:assert/strict'
import {test} from 'node:test'

import {editDistance, suggestCommand, suggestFlag} from '../../../src/lib/cli/suggest.js'

const IDS = ['keygen', 'send', 'recv', 'queue:list', 'queue:declare', 'queue:delete', 'cert:issue', 'cert:ca:init']

test('edit distance counts inserts, deletes and substitutions', () => {
  assert.equal(editDistance('keygn', 'keygen'), 1)
  assert.equal(editDistance('queue:lst', 'queue:list'), 1)
  assert.equal(editDistance('', 'abc'), 3)
  assert.equal(editDistance('same', 'same'), 0)
})

test('a mistyped command keeps the words after it as its arguments', () => {
  // oclif hands the hook every word before the first flag joined with ":"
  assert.deepEqual(suggestCommand('keygn:bob', IDS), {args: ['bob'], id: 'keygen'})
  assert.deepEqual(suggestCommand('queue:lst:orders:extra', IDS), {args: ['orders', 'extra'], id: 'queue:list'})
  assert.deepEqual(suggestCommand('keygn', IDS), {args: [], id: 'keygen'})
  assert.deepEqual(suggestCommand('cert:ca:int', IDS), {args: [], id: 'cert:ca:init'})
})

test('nothing is suggested when no command is near', () => {
  assert.equal(suggestCommand('frobnicate', IDS), undefined)
  assert.equal(suggestCommand('zz:yy', IDS), undefined)
})

test('a mistyped flag gets the nearest flag name', () => {
  const flags = ['queue', 'exchange', 'to', 'from', 'json', 'timeout']
  assert.equal(suggestFlag('--quue', flags), 'queue')
  assert.equal(suggestFlag('--quue=orders', flags), 'queue')
  assert.equal(suggestFlag('--timout', flags), 'timeout')
  assert.equal(suggestFlag('--wholly-unrelated', flags), undefined)
  assert.equal(suggestFlag('-x', flags), undefined)
})
