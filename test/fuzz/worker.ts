/** One fuzzing job in a worker thread: a harness, a seed, a number of inputs. See engine.ts. */
import {getHeapStatistics} from 'node:v8'
import {parentPort, workerData} from 'node:worker_threads'

import {FuzzBug, HARNESSES, corpusFiles} from './harnesses.js'
import {Mutator, Rng} from './mutate.js'

export interface WorkerJob {
  name: string
  runs: number
  seed: number
  timeoutMs: number
  /** Float64[0] = start time (ms) of the current input, Float64[1] = inputs done */
  state: SharedArrayBuffer
  /** u32 length, then the current input */
  input: SharedArrayBuffer
}

export type WorkerReport =
  | {type: 'progress'; done: number; corpus: number; heapMb: number}
  | {type: 'crash'; input: string; message: string}
  | {type: 'slow'; input: string; ms: number}
  | {type: 'done'; done: number; corpus: number; heapMb: number}

const job = workerData as WorkerJob
// libraries' process warnings (the yaml package on odd keys) would flood the parent's stderr
process.emitWarning = () => {}
const post = (r: WorkerReport) => parentPort!.postMessage(r)
const state = new Float64Array(job.state)
const inputView = Buffer.from(job.input)

const h = HARNESSES.find((x) => x.name === job.name)!
const ctx = await h.setup()
const corpus: Buffer[] = [...h.seeds(ctx), ...corpusFiles(h.name)].map((b) => b.subarray(0, h.maxLen))
const seen = new Set<string>()
const rng = new Rng(job.seed)
const mut = new Mutator(rng, h.dict.map((d) => Buffer.from(d)), h.maxLen)
const CORPUS_MAX = 4096
let heapMb = 0
const heap = () => (heapMb = Math.max(heapMb, Math.round(getHeapStatistics().used_heap_size / 1048576)))
const reported = new Set<string>()
let lastPost = Date.now()

for (let i = 0; i < job.runs; i++) {
  // Servers leave timers per connection (deadlines, the relay's last-resort destroy) that hold the
  // socket; with no real I/O this loop would never reach the timers phase and keep them all.
  if ((i & 63) === 63) await new Promise((r) => setImmediate(r))
  // the seeds go in unchanged first, then mutants of the (growing) corpus
  const input = i < corpus.length ? corpus[i] : mut.mutate(corpus[rng.int(corpus.length)], () => corpus[rng.int(corpus.length)])
  inputView.writeUInt32LE(input.length, 0)
  input.copy(inputView, 4)
  const t0 = performance.now()
  state[0] = Date.now()
  try {
    const r = h.run(input, ctx)
    const sig = typeof r === 'string' ? r : await r
    if (!seen.has(sig)) {
      seen.add(sig)
      if (corpus.length < CORPUS_MAX) corpus.push(input)
    }
  } catch (error) {
    const message = error instanceof FuzzBug ? error.message : `harness failure: ${(error as Error)?.stack ?? String(error)}`
    const key = message.split('\n')[0]
    // one report per distinct failure; the count still grows
    post({input: reported.has(key) ? '' : input.toString('base64'), message, type: 'crash'})
    reported.add(key)
  }
  const ms = performance.now() - t0
  if (ms > job.timeoutMs) post({input: input.toString('base64'), ms, type: 'slow'})
  state[1] = i + 1
  if ((i & 1023) === 0 && Date.now() - lastPost > 1000) {
    lastPost = Date.now()
    post({corpus: corpus.length, done: i + 1, heapMb: heap(), type: 'progress'})
  }
}
await h.teardown?.(ctx)
post({corpus: corpus.length, done: job.runs, heapMb: heap(), type: 'done'})
