import assert from 'node:assert/strict'
import {writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {test} from 'node:test'

import {runCli} from '../helpers/cli.js'
import {tempHome} from '../helpers/home.js'

test('mq config show --json reflects env overrides', async () => {
  const h = tempHome()
  try {
    const r = await runCli(['config', 'show', '--json'], {env: {MQ_BROKER_PORT: '5800'}, home: h.dir})
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout)
    assert.equal(out.broker.port, 5800)
    assert.equal(out.home, h.dir)
  } finally {
    h.cleanup()
  }
})

test('a bad config exits 78 with file, line and key, in text and in --json', async () => {
  const h = tempHome()
  try {
    writeFileSync(join(h.dir, 'config.yaml'), 'worker:\n  concurrency: 0\n')
    const r = await runCli(['config', 'show'], {home: h.dir})
    assert.equal(r.code, 78)
    assert.match(r.stderr, /config\.yaml:2: worker\.concurrency/)
    assert.match(r.stderr, /Try this:/)
    const j = await runCli(['config', 'show', '--json'], {home: h.dir})
    assert.equal(j.code, 78)
    assert.equal(JSON.parse(j.stdout).error.code, 'E_CONFIG_INVALID')
  } finally {
    h.cleanup()
  }
})

test('an unknown flag is a usage error (exit 2)', async () => {
  const r = await runCli(['config', 'show', '--no-such-flag'])
  assert.equal(r.code, 2)
  assert.match(r.stderr, /no-such-flag/)
})

test('mq config show never prints the passwords in store and redis URLs', async () => {
  const h = tempHome()
  try {
    const env = {MQ_REDIS_URL: 'redis://:r3dis-Pa55@127.0.0.1:6379/0', MQ_STORE_URL: 'mysql://mq:My5ql-Pa55@127.0.0.1:3306/mq'}
    const j = await runCli(['config', 'show', '--json'], {env, home: h.dir})
    assert.equal(j.code, 0, j.stderr)
    const out = JSON.parse(j.stdout)
    assert.equal(out.store.url, 'mysql://mq:***@127.0.0.1:3306/mq')
    assert.equal(out.redis.url, 'redis://:***@127.0.0.1:6379/0')
    const t = await runCli(['config', 'show'], {env, home: h.dir})
    assert.equal(t.code, 0, t.stderr)
    assert.match(t.stdout, /mysql:\/\/mq:\*\*\*@127\.0\.0\.1:3306\/mq/)
    for (const r of [j, t]) assert.doesNotMatch(r.stdout + r.stderr, /Pa55/)
  } finally {
    h.cleanup()
  }
})
