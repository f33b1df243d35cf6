// Preloaded into the broker by broker-cpu.mjs: counts its main thread's GCs by kind into $MQ_AB_GC_DIR/PID.
const {isMainThread} = require('node:worker_threads')
if (isMainThread && process.env.MQ_AB_GC_DIR) {
  const {PerformanceObserver, constants} = require('node:perf_hooks')
  const fs = require('node:fs')
  const c = {minor: 0, major: 0, incremental: 0, other: 0, ms: 0}
  const file = require('node:path').join(process.env.MQ_AB_GC_DIR, String(process.pid))
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const k = e.detail?.kind ?? e.kind
      if (k === constants.NODE_PERFORMANCE_GC_MINOR) c.minor++
      else if (k === constants.NODE_PERFORMANCE_GC_MAJOR) c.major++
      else if (k === constants.NODE_PERFORMANCE_GC_INCREMENTAL) c.incremental++
      else c.other++
      c.ms += e.duration
    }
    fs.writeFileSync(file, JSON.stringify(c))
  }).observe({entryTypes: ['gc']})
}
