import assert from 'node:assert/strict'
import {test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'

// a smoke of the scale benchmark (the real run is `npm run bench:scale`): small counts, mq only
test('mq bench scale --json: queues declared and restarted, idle connections measured, every fanout delivery counted', async () => {
  const h = tempHome('mq-bench-scale-')
  try {
    const r = await runCli(['bench', 'scale', '--queues', '20', '--connections', '10', '--consumers', '3', '--messages', '200', '--no-rabbitmq', '--json'], {home: h.dir})
    assert.equal(r.code, 0, r.stderr)
    const [mq] = JSON.parse(r.stdout).results
    assert.equal(mq.target, 'mq')
    assert.equal(mq.queues.count, 20)
    assert.ok(mq.queues.restart_ms > 0)
    assert.ok(mq.queues.rss_after_restart > 0)
    assert.equal(mq.connections.count, 10)
    assert.equal(typeof mq.connections.bytes_per_connection, 'number')
    assert.equal(mq.fanout.delivered, 600)
    assert.match(r.stderr, /mq: fanout of 200 to 3 consumers: 600 deliveries/)
  } finally {
    h.cleanup()
  }
})
