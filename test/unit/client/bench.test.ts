import assert from 'node:assert/strict'
import {test} from 'node:test'

import {readFileSync} from 'node:fs'
import {PassThrough} from 'node:stream'

import {type BenchResult, type BenchSpec, type BenchTarget, type ConsumerProcess, type ConsumerReport, medianRun, percentiles, runBench, scaledForSize, serveConsumerRuns} from '../../../src/lib/client/bench.js'

const run = (msgsPerSec: number, confirmP99?: number, rate?: number): BenchResult => ({
  confirmMs: confirmP99 === undefined ? undefined : {max: 0, p50: 0, p99: confirmP99, p999: 0},
  latencyMs: {max: 0, p50: 0, p99: 0, p999: 0},
  mbPerSec: 0,
  messages: 1,
  mode: 'durable',
  msgsPerSec,
  rate,
  seconds: 1,
  size: 256,
  target: 'mq',
})

test('the reported run of repeated ones is the median: by throughput, or by p99 confirm when paced', () => {
  assert.equal(medianRun([]), undefined)
  assert.equal(medianRun([run(300), run(100), run(200)])?.msgsPerSec, 200)
  // an even count takes the lower middle: never the luckier of two
  assert.equal(medianRun([run(400), run(100)])?.msgsPerSec, 100)
  const paced = medianRun([run(5000, 9, 5000), run(5000, 2, 5000), run(5000, 4, 5000), run(5000, 3, 5000)])
  assert.equal(paced?.confirmMs?.p99, 4)
})

test('latency percentiles of a run include p99.9 and the max: the stalls a p99 hides', () => {
  // 10,000 samples: 1 ms each, except 20 of 10 ms (0.2%) and the slowest at 50 ms
  const lat = new Float64Array(10_000).fill(1)
  lat.fill(10, 9979, 9999)
  lat[9999] = 50
  assert.deepEqual(percentiles(lat), {max: 50, p50: 1, p99: 1, p999: 10})
  assert.deepEqual(percentiles(new Float64Array(0)), {max: 0, p50: 0, p99: 0, p999: 0})
})

test('big payloads get fewer messages and a smaller window (at most 1 GiB a run, 64 MiB in flight); small ones keep the flags', () => {
  assert.deepEqual(scaledForSize(256, 20_000, 500), {messages: 20_000, window: 500})
  assert.deepEqual(scaledForSize(4096, 20_000, 500), {messages: 20_000, window: 500})
  assert.deepEqual(scaledForSize(65_536, 20_000, 500), {messages: 16_384, window: 500})
  assert.deepEqual(scaledForSize(1_048_576, 20_000, 500), {messages: 1024, window: 64})
  assert.deepEqual(scaledForSize(64 * 1_048_576, 20_000, 500), {messages: 100, window: 8})
})

test('npm run bench:compare covers 256 B, 4 KiB, 64 KiB and 1 MiB', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as {scripts: Record<string, string>}
  const sizes = [...pkg.scripts['bench:compare'].matchAll(/--size (\d+)/g)].map((m) => Number(m[1]))
  assert.deepEqual(sizes, [256, 4096, 65_536, 1_048_576])
})

test('one consumer process serves run after run (warm-up, then the timed runs): each its own queue, mode and count, in order, until stdin closes', async () => {
  const started: string[] = []
  let acks = 0
  const target: BenchTarget = {
    cleanup: async () => {},
    async consumer(spec, dest) {
      return {
        close: async () => {},
        async start(onMessage) {
          started.push(`${dest} ${spec.mode} ${spec.messages}`)
          setImmediate(() => {
            for (let i = 0; i < spec.messages; i++) {
              const b = Buffer.alloc(16)
              b.writeDoubleLE(performance.timeOrigin + performance.now(), 0)
              onMessage(b, () => acks++)
            }
          })
        },
      }
    },
    name: 'mq',
    prepare: async () => '',
    producer: async () => assert.fail('the consumer side never produces'),
  }
  const input = new PassThrough()
  const lines: string[] = []
  const served = serveConsumerRuns(target, input, (l) => lines.push(l))
  input.write(JSON.stringify({dest: 'q.warm', messages: 300, mode: 'memory', window: 10}) + '\n')
  input.write(JSON.stringify({dest: 'q.timed', messages: 2000, mode: 'durable', window: 10}) + '\n')
  input.end()
  await served
  assert.deepEqual(started, ['q.warm memory 300', 'q.timed durable 2000'])
  // acks only in durable mode
  assert.equal(acks, 2000)
  const reports = lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as {received: number; cpuUs: number})
  assert.deepEqual(
    reports.map((r) => r.received),
    [300, 2000],
  )
  // the consumer's CPU from ready to its last message, for mq bench's cpu/msg
  for (const r of reports) assert.ok(r.cpuUs >= 0 && Number.isFinite(r.cpuUs))
  assert.deepEqual(
    lines.filter((l) => !l.startsWith('{')),
    ['ready', 'ready', 'progress 1000', 'progress 2000'],
  )
})

/**
 * A broker that takes its time: each publish is "received" (its bytes read) only after a delay, as a
 * client's buffered write is; the bytes it received are what a consumer would get. The run's consumer
 * reports once every publish was received.
 */
function slowBroker(spec: BenchSpec) {
  const received: Buffer[] = []
  const bodies = new Set<Buffer>()
  let done!: (r: ConsumerReport) => void
  const report = new Promise<ConsumerReport>((r) => (done = r))
  const receive = (body: Buffer, then: () => void) => {
    bodies.add(body)
    setTimeout(
      () => {
        // what the broker reads is the body as it is now, not as it was handed over
        received.push(Buffer.from(body))
        then()
        if (received.length === spec.messages) done({cpuUs: 0, lastAt: performance.timeOrigin + performance.now(), latencyMs: {max: 0, p50: 0, p99: 0, p999: 0}, received: received.length})
      },
      received.length % 3,
    )
  }
  const target: BenchTarget = {
    cleanup: async () => {},
    consumer: async () => assert.fail('the consumer is the fake process'),
    name: 'mq',
    prepare: async () => 'q',
    producer: async () => ({
      close: async () => {},
      drained: async () => {},
      publish(body) {
        receive(body, () => {})
        return true
      },
      publishConfirmed: (body) => new Promise<void>((resolve) => receive(body, resolve)),
    }),
  }
  const consumer = {kill() {}, run: async () => ({report})} as unknown as ConsumerProcess
  return {bodies, consumer, received, target}
}

for (const mode of ['durable', 'memory'] as const) {
  test(`${mode} bench: every body arrives as published (its own stamp, the filler intact), none rewritten while a client may still hold it`, async () => {
    const spec: BenchSpec = {messages: 400, mode, size: 4096, window: 8}
    const b = slowBroker(spec)
    const r = await runBench(b.target, {target: 'mq', url: ''}, spec, undefined, b.consumer)
    assert.equal(r.messages, 400)
    assert.equal(b.received.length, 400)
    const filler = b.received[0].subarray(8)
    const stamps = new Set<number>()
    for (const body of b.received) {
      assert.equal(body.length, 4096)
      assert.ok(body.subarray(8).equals(filler), 'the payload after the stamp is the same for every message')
      stamps.add(body.readDoubleLE(0))
    }
    // a body reused before the broker had read it would arrive with a later message's stamp, twice
    assert.equal(stamps.size, 400, 'each message arrived with its own send time')
    if (mode === 'durable') {
      // confirmed bodies are reused: no more buffers than the window holds, not one per message
      assert.ok(b.bodies.size <= spec.window + 1, `${b.bodies.size} bodies for a window of ${spec.window}`)
    } else assert.equal(b.bodies.size, 400, 'an unconfirmed body is never reused')
  })
}
