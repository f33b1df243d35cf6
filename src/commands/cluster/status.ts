import {withBroker} from '../../lib/client/connect.js'
import {brokerFlags} from '../../lib/client/flags.js'
import {MqCommand} from '../../lib/cli/base-command.js'
import {table} from '../../lib/cli/table.js'
import {MqError} from '../../lib/errors.js'

/** --json keys are snake_case; node info is passed through as the node reported it */
function snake(v: unknown, depth = 0): unknown {
  if (Array.isArray(v)) return v.map((x) => snake(x, depth))
  if (v === null || typeof v !== 'object' || depth > 2) return v
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k.replaceAll(/[A-Z]/g, (c) => '_' + c.toLowerCase()), k === 'info' ? x : snake(x, depth + 1)]))
}

export default class ClusterStatusCommand extends MqCommand<typeof ClusterStatusCommand> {
  static summary = 'Show the cluster as the node you connect to sees it: nodes, liveness, durability, claims'
  static description = `The broker cluster as the node you connect to sees it (cluster mode, docs/cluster.md): its nodes, whether each is alive,
its last heartbeat, connections and address; the durability Redis promises; claims and fencing counters`
  static examples = ['<%= config.bin %> cluster status', '<%= config.bin %> cluster status --json', '<%= config.bin %> cluster status --broker 10.0.0.2:5700']
  static flags = {...brokerFlags}

  async run(): Promise<Record<string, unknown>> {
    const st = await withBroker(this.home, this.mqConfig(), this.flags, (c) => c.stats())
    const cl = st.cluster
    if (!cl) throw new MqError('E_NOT_CLUSTER', 'this broker runs standalone (SQLite), not in cluster mode', {exit: 1, hint: 'Try this: start brokers with mq broker start --cluster redis://HOST:6379'})
    if (!this.jsonEnabled()) {
      const alive = cl.nodes.filter((x) => x.alive).length
      this.out(
        [
          `cluster ${cl.name}   nodes alive ${alive}/${cl.nodes.length}   claim after ${cl.claimMs} ms   answered by ${cl.node}`,
          `durability ${cl.durability.mode}${cl.durability.promised ? '' : ' (NOT promised)'}: ${cl.durability.detail}`,
          `claimed ${cl.claimed}   fenced settles ${cl.fencedSettles}   lease losses ${cl.fences}`,
          '',
          table(
            cl.nodes.map((x) => ({
              alive: x.alive ? 'yes' : 'NO',
              connections: Number(x.info.connections ?? 0),
              last_heartbeat: `${(x.lastHeartbeatMsAgo / 1000).toFixed(1)} s ago`,
              messaging: String(x.info.messaging ?? ''),
              node: x.self ? `${x.consumer} *` : x.consumer,
            })),
            ['node', 'alive', 'last_heartbeat', 'connections', 'messaging'],
          ),
        ].join('\n'),
      )
    }
    return snake(cl) as Record<string, unknown>
  }
}
