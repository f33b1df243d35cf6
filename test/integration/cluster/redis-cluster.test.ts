import assert from 'node:assert/strict'
import {type ChildProcess, execFileSync, spawn} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {after, before, test} from 'node:test'

import {ClusterEngine} from '../../../src/lib/broker/cluster/engine.js'
import type {DeliveryOut} from '../../../src/lib/broker/engine.js'
import {silentLogger} from '../../../src/lib/log.js'
import {freeClusterPort, uniqueName, waitFor} from '../../helpers/services.js'

// a 3-master Redis Cluster on loopback (--cluster-enabled yes and redis-cli --cluster create)
const procs: ChildProcess[] = []
const engines: ClusterEngine[] = []
let dir: string
let url: string

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mq-rcluster-'))
  const ports: number[] = []
  // distinct, each with its bus port (port + 10000) free as well
  while (ports.length < 3) {
    const p = await freeClusterPort()
    if (!ports.includes(p) && !ports.some((q) => Math.abs(q - p) === 10_000)) ports.push(p)
  }
  for (const port of ports) {
    const d = join(dir, String(port))
    execFileSync('mkdir', ['-p', d])
    procs.push(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', d, '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--appendonly', 'yes', '--appendfsync', 'always', '--save', ''], {stdio: 'ignore'}))
  }
  await waitFor(() => ports.every((p) => {
    try {
      return execFileSync('redis-cli', ['-p', String(p), 'ping']).toString().trim() === 'PONG'
    } catch {
      return false
    }
  }), 10_000, 100)
  execFileSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], {stdio: 'ignore'})
  await waitFor(() => execFileSync('redis-cli', ['-p', String(ports[0]), 'cluster', 'info']).toString().includes('cluster_state:ok'), 10_000, 100)
  url = `redis-cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`
})

after(async () => {
  for (const e of engines) await e.close().catch(() => {})
  for (const p of procs) p.kill('SIGKILL')
  rmSync(dir, {force: true, recursive: true})
})

test('on a 3-master Redis Cluster: topic routing across two nodes, queues spread over slots, consumed on the other node', async () => {
  const name = uniqueName('rc')
  const a = await ClusterEngine.connect({claimMs: 1000, durability: 'fsync', logger: silentLogger, name, url})
  const b = await ClusterEngine.connect({claimMs: 1000, durability: 'fsync', logger: silentLogger, name, url})
  engines.push(a, b)
  a.start()
  b.start()
  const committed = (e: ClusterEngine) => new Promise<void>((resolve, reject) => e.store.afterCommit((err) => (err ? reject(err) : resolve())))
  a.declareExchange('events', 'topic')
  const queues = ['q.alpha', 'q.beta', 'q.gamma', 'q.delta']
  for (const q of queues) {
    a.declareQueue(q, {durable: true})
    a.bind(q, 'events', `${q}.#`)
  }
  await committed(a)
  await waitFor(() => queues.every((q) => b.queues.has(q)))
  for (const q of queues) for (let i = 0; i < 5; i++) b.publish('events', `${q}.x`, Buffer.from(`${q}-${i}`))
  await committed(b)
  const got: DeliveryOut[] = []
  const s = a.openSession('t', {deliver: (d) => void got.push(d), writable: () => true})
  for (const q of queues) a.consume(s, q, {prefetch: 10})
  await waitFor(() => got.length === 20, 10_000)
  for (const d of got) a.ack(s, d.deliveryTag)
  for (const q of queues) assert.deepEqual(got.filter((d) => d.queue === q).map((d) => d.msg.body.toString()), [0, 1, 2, 3, 4].map((i) => `${q}-${i}`))
  // the queues do not all live on one master
  const slots = new Set(queues.map((q) => execFileSync('redis-cli', ['-p', url.split(',')[0].split(':').pop()!, 'cluster', 'keyslot', `{mq:${name}:q:${q}}:s`]).toString().trim()))
  assert.ok(slots.size > 1)
})
