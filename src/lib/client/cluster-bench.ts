/**
 * `mq bench --cluster`: cluster mode's durable throughput and latency with 1 node and with 3 nodes on
 * one private Redis (AOF fsynced on every write, as `broker.cluster.durability: fsync` asks), next to
 * RabbitMQ's quorum queue and NATS JetStream in the same run. With 3 nodes the producer publishes on
 * the first node and the consumer reads on the last, so every message crosses nodes through Redis.
 * On one machine the nodes, Redis and the clients share the CPU: the CPU each used during the run is
 * reported, to show whether Redis or mq is the bound.
 */
import {randomBytes} from 'node:crypto'

import type {BenchResult, BenchSpec, TargetParams} from './bench.js'
import {cpuSecondsOf, spawnClusterNodes, spawnPrivateRedis} from './spawn.js'

export interface ClusterRun extends BenchResult {
  /** 'mq 1 node', 'mq 3 nodes', 'rabbitmq-quorum', 'nats-js' */
  setup: string
  /**
   * cores used during the run (1.0 = one core busy all the time), and CPU microseconds per message
   * (warm-up included in both the CPU and the messages): the load-independent figure for A/B runs
   */
  cpu?: {redis: number; mq: number; mqUsPerMsg: number; redisUsPerMsg: number}
}

export interface ClusterRatio {
  mode: string
  setup: string
  against: string
  metric: string
  mq: number
  other: number
  ratio: number
}

export interface ClusterBenchOptions {
  specs: BenchSpec[]
  /** runs one workload on one target (warm-up included), undefined when it failed */
  runOnce(p: TargetParams, s: BenchSpec, setup: string): Promise<BenchResult | undefined>
  compare: boolean
  rabbitUrl: string
  nats: string
  log(line: string): void
  /** messages of the untimed warm-up runOnce makes before a workload */
  warmupOf(s: BenchSpec): number
}

export async function runClusterBench(o: ClusterBenchOptions): Promise<{runs: ClusterRun[]; ratios: ClusterRatio[]}> {
  const runs: ClusterRun[] = []
  const redis = await spawnPrivateRedis()
  o.log(`private redis-server (appendfsync always) at ${redis.url}`)
  try {
    for (const count of [1, 3]) {
      const setup = `mq ${count} node${count > 1 ? 's' : ''}`
      const nodes = await spawnClusterNodes(count, redis.url, `bench-${randomBytes(3).toString('hex')}`)
      try {
        const first = nodes[0]
        const last = nodes[nodes.length - 1]
        const p: TargetParams = {consumerUrl: `127.0.0.1:${last.port}`, home: first.home, identity: 'admin', target: 'mq', url: `127.0.0.1:${first.port}`}
        for (const s of o.specs) {
          const cpu0 = {mq: nodes.reduce((a, n) => a + cpuSecondsOf(n.proc.pid), 0), redis: cpuSecondsOf(redis.proc.pid)}
          const t0 = performance.now()
          const r = await o.runOnce(p, s, setup)
          if (!r) continue
          const wall = Math.max((performance.now() - t0) / 1000, 0.001)
          const mq = nodes.reduce((a, n) => a + cpuSecondsOf(n.proc.pid), 0) - cpu0.mq
          const rd = cpuSecondsOf(redis.proc.pid) - cpu0.redis
          // cores busy on average over the whole call (warm-up included): a rough split, not a rate
          const n = r.messages + o.warmupOf(s)
          runs.push({...r, cpu: {mq: round(mq / wall), mqUsPerMsg: round((mq * 1e6) / n), redis: round(rd / wall), redisUsPerMsg: round((rd * 1e6) / n)}, setup})
        }
      } finally {
        for (const n of nodes) await n.stop().catch(() => {})
      }
    }
  } finally {
    await redis.stop()
  }
  if (o.compare) {
    for (const s of o.specs) {
      const q = await o.runOnce({target: 'rabbitmq-quorum', url: o.rabbitUrl}, s, 'rabbitmq-quorum')
      if (q) runs.push({...q, setup: 'rabbitmq-quorum'})
      const j = await o.runOnce({target: 'nats-js', url: o.nats}, s, 'nats-js')
      if (j) runs.push({...j, setup: 'nats-js'})
    }
  }
  return {ratios: clusterRatios(runs), runs}
}

function round(n: number): number {
  return Math.round(n * 100) / 100
}

/** Each mq setup against each reference, per workload: throughput for unpaced runs, p99 confirm latency for paced ones. */
export function clusterRatios(runs: ClusterRun[]): ClusterRatio[] {
  const out: ClusterRatio[] = []
  const key = (r: ClusterRun) => `${r.mode} ${r.size} ${r.rate ?? ''}`
  for (const m of runs.filter((r) => r.setup.startsWith('mq '))) {
    for (const other of runs.filter((r) => !r.setup.startsWith('mq ') && key(r) === key(m))) {
      const mode = `${m.mode} ${m.size} B${m.rate ? ` @${m.rate}/s` : ''}`
      if (m.rate) {
        const a = m.confirmMs?.p99 ?? m.latencyMs.p99
        const b = other.confirmMs?.p99 ?? other.latencyMs.p99
        out.push({against: other.setup, metric: 'p99 confirm ms (ratio other/mq, >1 = mq faster)', mode, mq: a, other: b, ratio: round(b / Math.max(a, 0.001)), setup: m.setup})
      } else out.push({against: other.setup, metric: 'msg/s (ratio mq/other)', mode, mq: m.msgsPerSec, other: other.msgsPerSec, ratio: round(m.msgsPerSec / Math.max(other.msgsPerSec, 1)), setup: m.setup})
    }
  }
  return out
}
