import assert from 'node:assert/strict'
import {test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

// a smoke of `mq bench --cluster` (the real run adds --compare for RabbitMQ quorum queues and JetStream)
test('mq bench --cluster --json: durable runs on 1 and 3 cluster nodes over a private Redis, every message received, CPU reported', async () => {
  const h = tempHome('mq-bench-cluster-')
  try {
    const r = await runCli(['bench', '--cluster', '--messages', '300', '--warmup', '0', '--latency-rate', '0', '--json'], {home: h.dir, timeoutMs: 240_000})
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout)
    assert.deepEqual(out.results.map((x: {setup: string}) => x.setup), ['mq 1 node', 'mq 3 nodes'])
    for (const x of out.results) {
      assert.equal(x.messages, 300)
      assert.equal(x.mode, 'durable')
      assert.ok(x.msgs_per_sec > 0)
      assert.ok(x.cpu.mq > 0, 'the nodes\' CPU is measured')
      assert.ok(x.cpu.mq_us_per_msg > 0, 'and per message')
    }
    assert.match(r.stderr, /private redis-server \(appendfsync always\)/)
  } finally {
    h.cleanup()
  }
})
