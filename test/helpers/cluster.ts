import {cpSync, mkdirSync} from 'node:fs'
import {join} from 'node:path'

import {type BrokerProcess, spawnBroker} from './broker.js'
import {tempHome} from './home.js'
import {privateRedis} from './pipeline.js'
import {uniqueName} from './services.js'

export interface TestCluster {
  redis: Awaited<ReturnType<typeof privateRedis>>
  nodes: BrokerProcess[]
  name: string
  env: NodeJS.ProcessEnv
  /** one more node on the same Redis and CA */
  add(): Promise<BrokerProcess>
  cleanup(): Promise<void>
}

/**
 * `count` brokers in cluster mode on a private redis-server with AOF (appendfsync always), all with
 * certificates of one CA: the first node creates it, the others get a copy of its pki directory.
 */
export async function startCluster(count: number, opts: {claimMs?: number; env?: NodeJS.ProcessEnv} = {}): Promise<TestCluster> {
  const redis = await privateRedis()
  const name = uniqueName('c')
  const env = {MQ_BROKER_CLUSTER_CLAIM_MS: String(opts.claimMs ?? 2000), MQ_BROKER_CLUSTER_NAME: name, MQ_BROKER_CLUSTER_URL: redis.url, ...opts.env}
  const homes: {cleanup: () => void}[] = []
  const nodes: BrokerProcess[] = []
  const add = async () => {
    let home: string | undefined
    if (nodes.length > 0) {
      const h = tempHome('mq-cluster-')
      homes.push(h)
      mkdirSync(h.dir, {recursive: true})
      cpSync(join(nodes[0].home, 'pki'), join(h.dir, 'pki'), {recursive: true})
      home = h.dir
    }
    const b = await spawnBroker({env, home})
    nodes.push(b)
    return b
  }
  try {
    // the first node creates the CA; the others start side by side
    await add()
    await Promise.all(Array.from({length: count - 1}, () => add()))
  } catch (error) {
    for (const n of nodes) await n.stop().catch(() => {})
    await redis.destroy()
    throw error
  }
  return {
    add,
    async cleanup() {
      for (const n of nodes) await n.cleanup().catch(() => {})
      for (const h of homes) h.cleanup()
      await redis.destroy()
    },
    env,
    name,
    nodes,
    redis,
  }
}
