/** Issue 20: one JSON key casing. Walks the --json output of the data commands and checks every key is snake_case. */
import assert from 'node:assert/strict'
import {after, before, test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'

/** Every key of a JSON value, with its path; the keys of user-keyed maps (headers, metadata) and of config origins are data. */
function keys(value: unknown, path = '$', out: string[] = []): string[] {
  if (Array.isArray(value)) value.forEach((v, i) => keys(v, `${path}[${i}]`, out))
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      out.push(`${path}.${k}`)
      if (!['headers', 'metadata', 'origins'].includes(k)) keys(v, `${path}.${k}`, out)
    }
  }
  return out
}

let b: BrokerProcess
before(async () => {
  b = await spawnBroker({portsInConfig: true})
})
after(async () => {
  await b?.cleanup()
})

test('every --json output uses snake_case keys (the documented --json contract)', async () => {
  const mq = (args: string[]) => runCli(args, {home: b.home})
  assert.equal((await mq(['exchange', 'declare', 'shop', '--type', 'topic'])).code, 0)
  assert.equal((await mq(['queue', 'declare', 'orders', '--durable', '--dead-letter', 'orders.dlq', '--ttl', '1h'])).code, 0)
  assert.equal((await mq(['queue', 'bind', 'orders', '--exchange', 'shop', '--routing-key', 'order.#'])).code, 0)
  const sent = await mq(['send', '--exchange', 'shop', '--routing-key', 'order.new', '--plain', 'hello', '--json'])
  assert.equal(sent.code, 0, sent.stdout + sent.stderr)
  const id = /"message_id":\s*"([^"]+)"/.exec(sent.stdout)?.[1] as string
  assert.ok(id, sent.stdout)
  const commands = [
    ['config', 'show'],
    ['queue', 'list'],
    ['exchange', 'list'],
    ['stats'],
    ['message', 'status', id],
    ['broker', 'health'],
    ['cert', 'list'],
    ['cert', 'show', 'admin'],
    ['queue', 'peek', 'orders', '--count', '5'],
    ['definitions', 'export'],
    ['context', 'list'],
    ['recv', '--queue', 'orders', '--accept', 'plain', '--timeout', '5s'],
  ]
  const bad: string[] = []
  for (const args of commands) {
    const r = await mq([...args, '--json'])
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stdout}${r.stderr}`)
    // one (pretty-printed) document, or JSON lines for the streaming commands
    let docs: unknown[]
    try {
      docs = [JSON.parse(r.stdout)]
    } catch {
      docs = r.stdout.trim().split('\n').map((l) => JSON.parse(l))
    }
    for (const doc of docs) {
      for (const k of keys(doc)) if (!/^[a-z0-9_]+$/.test(k.slice(k.lastIndexOf('.') + 1))) bad.push(`mq ${args.join(' ')}: ${k}`)
    }
  }
  assert.deepEqual(bad, [])
})
