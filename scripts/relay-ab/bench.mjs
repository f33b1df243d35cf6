// usage: node bench.mjs ROOT [N] [FILE_MIB] -> the texts part of `mq relay bench` from ROOT's build (in-process relay and
// its twin, the same client loop), one JSON line: rates, CPU per text and per twin round trip, both ratios. For
// interleaved A/B pairs: FILE_MIB small (default 1) keeps the file part short; the texts part is the bench's own.
const [root, nArg, fileArg] = process.argv.slice(2)
const {runRelayBench} = await import(`${root}/dist/src/lib/relay/bench.js`)
const r = await runRelayBench({fileMiB: Number(fileArg ?? 1), messages: Number(nArg ?? 20000), textBytes: 100})
const load = (await import('node:fs')).readFileSync('/proc/loadavg', 'utf8').split(' ')[0]
console.log(JSON.stringify({
  root: root.split('/').pop(),
  load: Number(load),
  texts_per_s: Math.round(r.send_msgs_per_s),
  twin_rt_per_s: Math.round(r.baseline.roundtrips_per_s),
  ratio_rate: r.ratios.send_vs_roundtrip,
  cpu_us: r.send_cpu_us,
  twin_cpu_us: r.baseline.roundtrip_cpu_us,
  ratio_cpu: +(r.baseline.roundtrip_cpu_us / r.send_cpu_us).toFixed(3),
  errors: r.send_errors,
  ...(Number(fileArg ?? 1) >= 64 ? {upload_mib_s: r.file_upload_mib_per_s, twin_mib_s: r.baseline.mib_per_s, upload_ratio: r.ratios.upload_vs_tcp, rss_mib: r.peak_rss_mib} : {}),
}))
