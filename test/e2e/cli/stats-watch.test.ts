import assert from 'node:assert/strict'
import {type ChildProcess, spawn} from 'node:child_process'
import {after, before, test} from 'node:test'

import {type BrokerProcess, spawnBroker} from '../../helpers/broker.js'
import {BIN, ROOT} from '../../helpers/cli.js'

let broker: BrokerProcess

before(async () => {
  broker = await spawnBroker()
})

after(async () => {
  await broker?.cleanup()
})

function watch(cmd: string, args: string[]): {child: ChildProcess; out: () => string; err: () => string; exited: Promise<number | null>} {
  const child = spawn(cmd, args, {cwd: ROOT, env: {...process.env, NO_COLOR: '1', ...broker.cliEnv()}, stdio: ['pipe', 'pipe', 'pipe']})
  let out = ''
  let err = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
  return {child, err: () => err, exited, out: () => out}
}

async function until(what: string, cond: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

test('mq stats --watch --json on a pipe: one snake_case JSON object per interval, live figures, Ctrl-C exits 0', async () => {
  const w = watch(process.execPath, [BIN, 'stats', '--watch', '--interval', '300ms', '--json'])
  const lines = () => w.out().split('\n').filter(Boolean)
  await until('two lines', () => lines().length >= 2)
  const c = await broker.connect()
  await c.declareQueue('watched', {durable: true})
  await c.publish('', 'watched', Buffer.from('x'))
  await c.close()
  await until('the publish in the figures', () => lines().some((l) => JSON.parse(l).totals.published >= 1))
  w.child.kill('SIGINT')
  assert.equal(await w.exited, 0, w.err())
  const objs = lines().map((l) => JSON.parse(l))
  assert.ok(objs.length >= 3)
  for (const o of objs) {
    assert.equal(typeof o.time, 'string')
    assert.equal(typeof o.uptime_ms, 'number')
    assert.equal(o.uptimeMs, undefined)
  }
  assert.ok(objs.at(-1).uptime_ms > objs[0].uptime_ms)
  const q = objs.at(-1).queues.find((x: {name: string}) => x.name === 'watched')
  assert.equal(q.messages, 1)
  assert.equal(w.err(), '')
})

test('mq stats --watch on a pipe without --json: one line per interval', async () => {
  const w = watch(process.execPath, [BIN, 'stats', '--watch', '--interval', '200ms'])
  await until('three lines', () => w.out().split('\n').filter(Boolean).length >= 3)
  w.child.kill('SIGINT')
  assert.equal(await w.exited, 0, w.err())
  for (const l of w.out().split('\n').filter(Boolean)) assert.match(l, /^\d{4}-\d\d-\d\dT[\d:.]+Z connections=\d+ queues=\d+ ready=\d+ unacked=\d+ consumers=\d+ publish\/s=\d+ deliver\/s=\d+ ack\/s=\d+$/)
})

test('mq stats --watch on a terminal redraws the screen in place; Ctrl-C (typed on the terminal) exits 0', async () => {
  // script(1) gives the command a pseudo-terminal; a typed Ctrl-C reaches it as SIGINT through the terminal
  const cmd = `stty rows 30 cols 120; exec ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} stats --watch --interval 200ms`
  const w = watch('script', ['-qfec', cmd, '/dev/null'])
  await until('two screens', () => w.out().split('\x1b[H\x1b[2J').length >= 3)
  w.child.stdin!.write('\x03')
  assert.equal(await w.exited, 0, w.out() + w.err())
  const screens = w.out().split('\x1b[H\x1b[2J').slice(1)
  assert.match(screens[0], /mq stats --watch {3}127\.0\.0\.1:\d+ .*\(Ctrl-C to stop\)/)
  assert.match(screens[0], /QUEUE +READY +UNACKED +CONS/)
  assert.match(screens[0], /default_queue/)
})

test('mq stats --watch: a bad interval is a usage error', async () => {
  const w = watch(process.execPath, [BIN, 'stats', '--watch', '--interval', '5'])
  assert.equal(await w.exited, 2)
  assert.match(w.err(), /--interval/)
})
