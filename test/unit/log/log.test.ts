import assert from 'node:assert/strict'
import {test} from 'node:test'

import {Logger} from '../../../src/lib/log.js'

test('text lines are for people: time LEVEL [component] message key=value', () => {
  const lines: string[] = []
  const log = new Logger('info', '', (l) => lines.push(l)).child('broker').child('api')
  log.info('listening', {port: 5701, reason: new Error('a b'), skipped: undefined})
  log.debug('hidden')
  assert.equal(lines.length, 1)
  assert.match(lines[0], /^\d{4}-\d\d-\d\dT[\d:.]+Z INFO {2}\[broker\.api\] listening port=5701 reason="a b"$/)
})

test('json lines come from pino: one object per line with level, time, component, msg and the fields', () => {
  const lines: string[] = []
  const root = new Logger('info', '', (l) => lines.push(l), 'json')
  root.child('worker').warn('redis is volatile', {cause: new Error('no AOF'), keys: 3})
  root.info('no component')
  assert.equal(lines.length, 2)
  const a = JSON.parse(lines[0])
  assert.equal(a.level, 'warn')
  assert.equal(a.component, 'worker')
  assert.equal(a.msg, 'redis is volatile')
  assert.equal(a.cause, 'no AOF')
  assert.equal(a.keys, 3)
  assert.ok(!Number.isNaN(Date.parse(a.time)))
  assert.equal(a.pid, process.pid)
  assert.equal(JSON.parse(lines[1]).component, undefined)
})

test('one level and one format for a root and all its children, also when set after the children were made', () => {
  const lines: string[] = []
  const root = new Logger('info', '', (l) => lines.push(l))
  const client = root.child('client')
  client.debug('before')
  root.setLevel('debug')
  client.debug('after')
  root.setFormat('json')
  client.debug('as json')
  root.setLevel('error')
  client.info('silenced')
  assert.equal(lines.length, 2)
  assert.match(lines[0], /DEBUG \[client\] after$/)
  assert.equal(JSON.parse(lines[1]).msg, 'as json')
})

test('a child of the same name is not nested twice', () => {
  const lines: string[] = []
  new Logger('info', '', (l) => lines.push(l)).child('proxy').child('proxy').info('x')
  assert.match(lines[0], /\[proxy\] x$/)
})
