import assert from 'node:assert/strict'
import {request} from 'node:https'
import {after, before, test} from 'node:test'

import {MqHome} from '../../../src/lib/config/home.js'
import {clientTlsOptions} from '../../../src/lib/pki/index.js'

import {type TestCluster, startCluster} from '../../helpers/cluster.js'
import {runCli} from '../../helpers/cli.js'
import {waitFor} from '../../helpers/services.js'

let cluster: TestCluster

before(async () => {
  cluster = await startCluster(2)
})

after(async () => {
  await cluster?.cleanup()
})

test('mq cluster status lists the nodes and their heartbeats; mq stats and /metrics are cluster-wide from any node', async () => {
  const [a, b] = cluster.nodes
  const ca = await a.connect()
  await ca.declareQueue('shared', {durable: true})
  for (let i = 0; i < 5; i++) await ca.publish('', 'shared', Buffer.from(`m${i}`))
  await ca.close()
  // node B has no client of its own, yet reports the cluster's queue depth and both nodes
  await waitFor(async () => {
    const r = await runCli(['stats', '--json'], {env: b.cliEnv()})
    return r.code === 0 && JSON.parse(r.stdout).queues.find((q: {name: string}) => q.name === 'shared')?.messages === 5
  }, 10_000, 250)
  const r = await runCli(['cluster', 'status', '--json'], {env: b.cliEnv()})
  assert.equal(r.code, 0, r.stderr)
  const st = JSON.parse(r.stdout)
  assert.equal(st.name, cluster.name)
  assert.equal(st.nodes.length, 2)
  assert.ok(st.nodes.every((x: {alive: boolean; last_heartbeat_ms_ago: number}) => x.alive && x.last_heartbeat_ms_ago < 2000))
  assert.equal(st.durability.promised, true, 'the private Redis runs appendfsync always')
  const text = await runCli(['cluster', 'status'], {env: a.cliEnv()})
  assert.equal(text.code, 0)
  assert.match(text.stdout, new RegExp(`cluster ${cluster.name}\\s+nodes alive 2/2`))
  assert.match(text.stdout, /LAST_HEARTBEAT/)
  const metrics = await getMetrics(a.home, a.apiPort)
  assert.match(metrics, /mq_queue_messages\{queue="shared"\} 5/)
  assert.equal([...metrics.matchAll(/^mq_cluster_node_heartbeat_age_seconds\{node="[^"]+"\} (\S+)$/gm)].filter((m) => Number(m[1]) >= 0).length, 2)
})

function getMetrics(home: string, port: number): Promise<string> {
  const opts = clientTlsOptions(new MqHome(home), 'admin')
  return new Promise((resolve, reject) => {
    const req = request({ca: opts.ca, cert: opts.cert, checkServerIdentity: () => undefined, host: '127.0.0.1', key: opts.key, path: '/metrics', port}, (res) => {
      let b = ''
      res.on('data', (d) => (b += d))
      res.on('end', () => resolve(b))
    })
    req.on('error', reject)
    req.end()
  })
}
