import assert from 'node:assert/strict'
import {test} from 'node:test'

import {latestPerNode} from '../../../../src/lib/broker/cluster/nodes.js'
import type {ClusterNode} from '../../../../src/lib/wire/types.js'

const node = (name: string, epoch: number, ago: number, alive = ago < 2000): ClusterNode => ({alive, consumer: `${name}.${epoch}`, epoch, info: {epoch, node: name}, lastHeartbeatMsAgo: ago, node: name, self: false})

test('a node that rejoined under a new epoch is listed once, as its newest epoch; other nodes are kept', () => {
  // b lost its lease: b.0 still has a recent heartbeat when b.1 starts beating
  const got = latestPerNode([node('a', 0, 100), node('b', 0, 1500), node('b', 1, 50), node('c', 3, 9000, false)])
  assert.deepEqual(got.map((n) => n.consumer).sort(), ['a.0', 'b.1', 'c.3'])
})

test('the same epoch twice keeps the fresher heartbeat', () => {
  const got = latestPerNode([node('a', 2, 900), node('a', 2, 100)])
  assert.deepEqual(got.map((n) => n.lastHeartbeatMsAgo), [100])
})
