/**
 * Runs fuzz jobs in worker threads with a watchdog: an input that runs past the time limit is a
 * hang (the worker is terminated and the run goes on in a fresh one), a worker past its heap limit
 * is a memory failure, and every contract violation is kept with the input that caused it.
 */
import {createHash} from 'node:crypto'
import {mkdirSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {Worker} from 'node:worker_threads'

import {HARNESSES} from './harnesses.js'
import type {WorkerJob, WorkerReport} from './worker.js'

export interface FuzzFinding {
  kind: 'crash' | 'hang' | 'memory'
  message: string
  file?: string
}

export interface FuzzResult {
  parser: string
  inputs: number
  seconds: number
  inputs_per_s: number
  crashes: number
  hangs: number
  memory_failures: number
  corpus: number
  peak_heap_mb: number
  findings: FuzzFinding[]
  /** STOPPED: interrupted (--signal) before its runs, with no failure so far */
  verdict: 'PASS' | 'FAIL' | 'STOPPED'
}

export interface FuzzOptions {
  parser: string
  runs: number
  seed?: number
  /** per-input time limit */
  timeoutMs?: number
  /** heap limit of the worker */
  memoryMb?: number
  /** where failing inputs are written (none when undefined) */
  outDir?: string
  onProgress?: (done: number, total: number) => void
  /** stops the run early; the result counts the inputs done until then */
  signal?: AbortSignal
}

export const PARSERS = HARNESSES.map((h) => h.name)

export async function fuzz(o: FuzzOptions): Promise<FuzzResult> {
  const h = HARNESSES.find((x) => x.name === o.parser)
  if (!h) throw new Error(`no fuzz harness named ${o.parser}: one of ${PARSERS.join(', ')}`)
  const timeoutMs = o.timeoutMs ?? 2000
  const findings: FuzzFinding[] = []
  let crashes = 0
  let hangs = 0
  let memory = 0
  let done = 0
  let corpus = 0
  let peak = 0
  let seed = o.seed ?? Date.now() % 0x7fffffff
  const t0 = performance.now()
  const save = (input: Buffer, kind: string): string | undefined => {
    if (!o.outDir || input.length === 0) return undefined
    mkdirSync(o.outDir, {recursive: true})
    const file = join(o.outDir, `${h.name}-${kind}-${createHash('sha256').update(input).digest('hex').slice(0, 12)}.bin`)
    writeFileSync(file, input)
    return file
  }
  while (done < o.runs && !o.signal?.aborted) {
    const state = new SharedArrayBuffer(16)
    const inputBuf = new SharedArrayBuffer(4 + h.maxLen)
    const job: WorkerJob = {input: inputBuf, name: h.name, runs: o.runs - done, seed, state, timeoutMs}
    const base = done
    const w = new Worker(new URL('./worker.js', import.meta.url), {resourceLimits: {maxOldGenerationSizeMb: o.memoryMb ?? 512}, workerData: job})
    const st = new Float64Array(state)
    const current = () => {
      const v = Buffer.from(inputBuf)
      return Buffer.from(v.subarray(4, 4 + v.readUInt32LE(0)))
    }
    await new Promise<void>((resolve) => {
      let finished = false
      const finish = () => {
        if (finished) return
        finished = true
        clearInterval(watch)
        o.signal?.removeEventListener('abort', stop)
        resolve()
      }
      const stop = () => {
        done = base + st[1]
        void w.terminate().then(finish)
      }
      o.signal?.addEventListener('abort', stop)
      const watch = setInterval(() => {
        o.onProgress?.(base + st[1], o.runs)
        if (st[0] > 0 && Date.now() - st[0] > timeoutMs * 3 + 1000) {
          hangs++
          findings.push({file: save(current(), 'hang'), kind: 'hang', message: `input ${base + st[1] + 1} ran past ${timeoutMs * 3 + 1000} ms`})
          done = base + st[1] + 1
          void w.terminate().then(finish)
        }
      }, 250)
      w.on('message', (m: WorkerReport) => {
        if (m.type === 'crash') {
          crashes++
          if (m.input) findings.push({file: save(Buffer.from(m.input, 'base64'), 'crash'), kind: 'crash', message: m.message})
        } else if (m.type === 'slow') {
          hangs++
          findings.push({file: save(Buffer.from(m.input, 'base64'), 'slow'), kind: 'hang', message: `an input took ${Math.round(m.ms)} ms (limit ${timeoutMs} ms)`})
        } else {
          corpus = Math.max(corpus, m.corpus)
          peak = Math.max(peak, m.heapMb)
          if (m.type === 'done') done = base + m.done
        }
      })
      w.on('error', (e: Error & {code?: string}) => {
        if (e.code === 'ERR_WORKER_OUT_OF_MEMORY') {
          memory++
          findings.push({file: save(current(), 'memory'), kind: 'memory', message: `heap past ${o.memoryMb ?? 512} MB at input ${base + st[1] + 1}`})
        } else if (st[0] === 0) {
          // failed before its first input: the harness cannot run at all, retrying would loop
          crashes++
          findings.push({kind: 'crash', message: `harness setup failed: ${e.stack ?? e.message}`})
          done = o.runs
          return
        } else {
          crashes++
          findings.push({file: save(current(), 'crash'), kind: 'crash', message: `uncaught in the worker: ${e.stack ?? e.message}`})
        }
        done = base + st[1] + 1
      })
      w.on('exit', () => {
        // a worker that died without finishing (error above) resumes after the input that killed it
        if (done === base && st[1] === 0 && !finished) done = base + 1
        finish()
      })
    })
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
  }
  const seconds = (performance.now() - t0) / 1000
  return {
    corpus,
    crashes,
    findings,
    hangs,
    inputs: done,
    inputs_per_s: Math.round(done / seconds),
    memory_failures: memory,
    parser: h.name,
    peak_heap_mb: peak,
    seconds: Math.round(seconds * 10) / 10,
    verdict: crashes + hangs + memory > 0 ? 'FAIL' : done < o.runs ? 'STOPPED' : 'PASS',
  }
}
