import assert from 'node:assert/strict'
import {cpSync, mkdirSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import {after, before, test} from 'node:test'

import {BrokerClient} from '../../../src/lib/client/client.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {clientTlsOptions} from '../../../src/lib/pki/index.js'
import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {runCli} from '../../helpers/cli.js'
import {type TestCluster, startCluster} from '../../helpers/cluster.js'
import {tempHome} from '../../helpers/home.js'
import {waitFor} from '../../helpers/services.js'

// Each node has its own home (a copy of one CA): a revocation made on one home must reach every node.
let cluster: TestCluster
const late = tempHome('mq-cluster-late-')
let lateNode: BrokerProcess | undefined

before(async () => {
  cluster = await startCluster(2, {env: {MQ_BROKER_CRL_CHECK_INTERVAL_MS: '500'}})
})

after(async () => {
  await lateNode?.cleanup().catch(() => {})
  late.cleanup()
  await cluster?.cleanup()
})

const connectAs = (issuer: string, identity: string, port: number) =>
  BrokerClient.connect({host: '127.0.0.1', port, timeoutMs: 5000, tls: {...clientTlsOptions(new MqHome(issuer), identity), checkServerIdentity: () => undefined}})

test('a client revoked on node A\'s home is cut off and refused on node B, and a node started later with an old CRL takes the newer one', async () => {
  const [a, b] = cluster.nodes
  const issued = await runCli(['cert', 'issue', 'eve', '--type', 'client', '--json'], {home: a.home})
  assert.equal(issued.code, 0, issued.stderr)
  // a node whose home was copied before the revocation
  mkdirSync(late.dir, {recursive: true})
  cpSync(join(a.home, 'pki'), join(late.dir, 'pki'), {recursive: true})

  const onB = await connectAs(a.home, 'eve', b.port)
  let closed = false
  onB.on('error', () => {})
  onB.on('close', () => {
    closed = true
  })
  await onB.stats().catch(() => {})

  const revoked = await runCli(['cert', 'revoke', 'eve', '--json'], {home: a.home})
  assert.equal(revoked.code, 0, revoked.stderr)
  // A reloads its CRL, shares it through Redis; B takes it, drops eve's connection and refuses her
  await waitFor(() => closed, 10_000)
  await assert.rejects(connectAs(a.home, 'eve', b.port))
  assert.deepEqual(readFileSync(join(b.home, 'pki', 'crl.pem')), readFileSync(join(a.home, 'pki', 'crl.pem')), 'B wrote the shared CRL to its home')
  assert.match(b.log(), /took a newer CRL from the cluster/)

  lateNode = await spawnBroker({env: cluster.env, home: late.dir})
  await assert.rejects(connectAs(a.home, 'eve', lateNode.port))
  const admin = await lateNode.connect()
  await admin.close()
})

test('a CRL that our CA did not sign is not taken from the cluster', async () => {
  const [, b] = cluster.nodes
  const stranger = tempHome('mq-cluster-stranger-')
  try {
    // another CA's CRL, written straight into the cluster's Redis as a hostile writer could
    const init = await runCli(['cert', 'ca', 'init', '--json'], {home: stranger.dir})
    assert.equal(init.code, 0, init.stderr)
    const crl = await runCli(['cert', 'crl', '--json'], {home: stranger.dir})
    assert.equal(crl.code, 0, crl.stderr)
    const before = readFileSync(join(b.home, 'pki', 'crl.pem'))
    const {Redis} = await import('ioredis')
    const r = new Redis(cluster.redis.url)
    await r.hset(`{mq:${cluster.name}}:crl`, 'pem', readFileSync(join(stranger.dir, 'pki', 'crl.pem')), 'order', String(Number.MAX_SAFE_INTEGER))
    await r.publish(`mq:${cluster.name}:events`, JSON.stringify({t: 'crl'}))
    await waitFor(() => /ignoring a CRL shared in the cluster/.test(b.log()), 5000)
    assert.deepEqual(readFileSync(join(b.home, 'pki', 'crl.pem')), before)
    r.disconnect()
  } finally {
    stranger.cleanup()
  }
})
