import type {ClusterNode} from '../../wire/types.js'

/**
 * One entry per node: a node that lost its lease (paused, overloaded) rejoins under a new consumer
 * name (`<node>.<epoch+1>`) while the old name's heartbeat is still in Redis. For stats and `mq cluster
 * status` that is one node, its newest epoch; claims still see every consumer name.
 */
export function latestPerNode(nodes: ClusterNode[]): ClusterNode[] {
  const byNode = new Map<string, ClusterNode>()
  for (const n of nodes) {
    const seen = byNode.get(n.node)
    if (!seen || n.epoch > seen.epoch || (n.epoch === seen.epoch && n.lastHeartbeatMsAgo < seen.lastHeartbeatMsAgo)) byNode.set(n.node, n)
  }
  return [...byNode.values()]
}
