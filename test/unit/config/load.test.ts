import assert from 'node:assert/strict'
import {readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'

import {defaultConfig, loadConfig} from '../../../src/lib/config/load.js'
import {ConfigError, ExitCode} from '../../../src/lib/errors.js'
import {tempHome} from '../../helpers/home.js'

test('defaults: broker avoids ports other servers use', () => {
  const c = defaultConfig()
  assert.equal(c.broker.port, 5700)
  assert.equal(c.broker.api_port, 5701)
  for (const p of [5672, 4222, 1883, 6379, 3306, 5432]) assert.notEqual(c.broker.port, p)
})

test('precedence: shipped < home file < env < flags', () => {
  const h = tempHome()
  try {
    writeFileSync(join(h.dir, 'config.yaml'), 'broker:\n  port: 6000\n  api_port: 6001\nproxy:\n  port: 8100\n')
    const c = loadConfig({env: {MQ_BROKER_API_PORT: '6101', MQ_BROKER: 'h:1'}, flags: {proxy: {port: 8200}}, home: h.dir}).config
    assert.equal(c.broker.port, 6000)
    assert.equal(c.broker.api_port, 6101)
    assert.equal(c.proxy.port, 8200)
    assert.equal(c.client.broker, 'h:1')
    assert.equal(c.worker.concurrency, 4)
  } finally {
    h.cleanup()
  }
})

test('a bad value names file, line and key, and exits 78', () => {
  const h = tempHome()
  try {
    writeFileSync(join(h.dir, 'config.yaml'), '# comment\nbroker:\n  host: 127.0.0.1\n  port: seventy\n')
    assert.throws(
      () => loadConfig({env: {}, home: h.dir}),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        assert.equal(err.exit, ExitCode.CONFIG)
        assert.match(err.message, /config\.yaml:4: broker\.port:/)
        return true
      },
    )
  } finally {
    h.cleanup()
  }
})

test('an unknown key is reported with its line', () => {
  const h = tempHome()
  try {
    writeFileSync(join(h.dir, 'config.yaml'), 'broker:\n  port: 5800\n  prot: 1\n')
    assert.throws(() => loadConfig({env: {}, home: h.dir}), /config\.yaml:3: broker: unknown key "prot"/)
  } finally {
    h.cleanup()
  }
})

test('a bad environment value names the variable', () => {
  const h = tempHome()
  try {
    assert.throws(() => loadConfig({env: {MQ_BROKER_PORT: '99999'}, home: h.dir}), /environment variable MQ_BROKER_PORT: broker\.port/)
    assert.throws(() => loadConfig({env: {MQ_WORKER_CONCURRENCY: 'many'}, home: h.dir}), /MQ_WORKER_CONCURRENCY="many" is not a number/)
  } finally {
    h.cleanup()
  }
})

test('YAML syntax errors give the line', () => {
  const h = tempHome()
  try {
    writeFileSync(join(h.dir, 'config.yaml'), 'broker:\n  port: 1\n bad: [\n')
    assert.throws(() => loadConfig({env: {}, home: h.dir}), (err: unknown) => err instanceof ConfigError && err.code === 'E_CONFIG_SYNTAX' && /config\.yaml:\d+:/.test(err.message))
  } finally {
    h.cleanup()
  }
})

// found by npm run fuzz (config-yaml): these threw a bare ReferenceError, so mq exited 70 "internal error"
test('an alias without its anchor, or an alias bomb, is a config error (78), not an internal error', () => {
  const h = tempHome()
  try {
    const bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n'
    for (const text of ['broker:\n  port: *a\n', bomb, readFileSync(new URL('../../../../test/fuzz/corpus/config-yaml/unresolved-alias.yaml', import.meta.url), 'utf8')]) {
      writeFileSync(join(h.dir, 'config.yaml'), text)
      assert.throws(
        () => loadConfig({env: {}, home: h.dir}),
        (err: unknown) => err instanceof ConfigError && err.code === 'E_CONFIG_SYNTAX' && err.exit === 78 && /config\.yaml: YAML error/.test(err.message),
      )
    }
  } finally {
    h.cleanup()
  }
})
