/** kill -9 of `mq queue redrive` mid-run: no dead letter is lost, and every message moved twice is flagged. */
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {after, before, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {BIN, NO_CONTEXTS, ROOT, runCli} from '../../helpers/cli.js'

let broker: BrokerProcess

before(async () => {
  broker = await spawnBroker()
})

after(async () => {
  await broker?.cleanup()
})

const N = 5000

test('a redrive killed with SIGKILL loses nothing; the next one finishes it and flags every message that was moved twice', async (t) => {
  const c = await broker.connect()
  await c.declareQueue('work', {deadLetter: 'work.dead', durable: true})
  const ids = new Set<string>()
  for (let i = 0; i < N; i += 500) {
    const batch = await Promise.all(Array.from({length: 500}, (_, k) => c.publish('', 'work', Buffer.from(`m${i + k}`))))
    for (const b of batch) ids.add(b.messageId)
  }
  for (;;) {
    const d = await c.get('work')
    if (!d) break
    c.reject(d.deliveryTag, 'poison')
  }
  const depth = async (q: string) => (await c.listQueues()).find((x) => x.name === q)!.messages
  while ((await depth('work.dead')) < N) await new Promise((r) => setTimeout(r, 50))

  const child = spawn(process.execPath, [BIN, 'queue', 'redrive', 'work.dead'], {cwd: ROOT, env: {...process.env, ...NO_CONTEXTS, ...broker.cliEnv()}, stdio: 'ignore'})
  const exited = new Promise((r) => child.once('exit', r))
  // kill it in the middle of the run
  for (;;) {
    const left = await depth('work.dead')
    if (left < N - 200) break
    await new Promise((r) => setTimeout(r, 5))
  }
  child.kill('SIGKILL')
  await exited
  await new Promise((r) => setTimeout(r, 300))
  const movedFirst = await depth('work')
  const leftFirst = await depth('work.dead')
  assert.ok(movedFirst > 0 && leftFirst > 0, `killed mid-run: ${movedFirst} moved, ${leftFirst} left`)
  assert.ok(movedFirst + leftFirst >= N, 'nothing lost')

  const r = await runCli(['queue', 'redrive', 'work.dead', '--json'], {env: broker.cliEnv()})
  assert.equal(r.code, 0, r.stderr)
  const rep = JSON.parse(r.stdout)
  assert.equal(await depth('work.dead'), 0)
  // every id is in work; an id there twice has a flagged copy, and the report named it
  const seen = new Map<string, number>()
  const flagged = new Set<string>()
  for (;;) {
    const d = await c.get('work')
    if (!d) break
    seen.set(d.messageId, (seen.get(d.messageId) ?? 0) + 1)
    if (d.headers['x-redrive-possible-duplicate'] === '1') flagged.add(d.messageId)
    c.ack(d.deliveryTag)
  }
  await c.close()
  assert.equal(seen.size, N)
  for (const id of ids) assert.ok(seen.has(id), `lost ${id}`)
  const twice = [...seen].filter(([, n]) => n > 1).map(([id]) => id)
  for (const id of twice) assert.ok(flagged.has(id) && rep.possible_duplicates.includes(id), `${id} moved twice without a flag`)
  assert.ok(twice.length <= 64 + 1, `at most one window of duplicates, got ${twice.length}`)
  t.diagnostic(`killed after ${movedFirst} of ${N} moved; ${twice.length} moved twice, all flagged; ${rep.possible_duplicates.length} flagged in all`)
})
