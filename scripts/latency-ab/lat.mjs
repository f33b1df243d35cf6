// usage: node lat.mjs BROKER_ROOT RATE MESSAGES LABEL [CLIENT_ROOT]
// One paced durable latency run (256 B, confirms + acks, window 500) against a private broker started
// from BROKER_ROOT's build (old or new), driven by CLIENT_ROOT's bench client (the same for both sides),
// after an unpaced 20,000-message warm-up. Prints one JSON line: load average, broker CPU per message
// (from /proc), confirm and end-to-end p50/p99/p99.9/max, and the warm-up's msg/s and CPU per message.
import {readFileSync} from 'node:fs'
import {loadavg} from 'node:os'

const [brokerRoot, rate, messages, label, clientRoot = brokerRoot] = process.argv.slice(2)
const {spawnPrivateBroker} = await import(`${brokerRoot}/dist/src/lib/client/spawn.js`)
const {runBench, mqTarget} = await import(`${clientRoot}/dist/src/lib/client/bench.js`)
const {connectBroker} = await import(`${clientRoot}/dist/src/lib/client/connect.js`)
const {MqHome} = await import(`${clientRoot}/dist/src/lib/config/home.js`)
const {loadConfig} = await import(`${clientRoot}/dist/src/lib/config/load.js`)
const priv = await spawnPrivateBroker()
const home = new MqHome(priv.home)
const {config} = loadConfig({home: priv.home})
const url = `127.0.0.1:${priv.port}`
const target = mqTarget(() => connectBroker(home, config, {batchConfirms: true, broker: url, identity: 'admin'}))
const params = {home: priv.home, identity: 'admin', target: 'mq', url}
// broker process CPU in ms (user + system, CLK_TCK 100)
const cpu = () => {
  const f = readFileSync(`/proc/${priv.proc.pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) * 10
}
const r1 = (n) => Math.round(n * 10) / 10
try {
  const w0 = cpu()
  const w = await runBench(target, params, {messages: 20000, mode: 'durable', size: 256, window: 500})
  const unpaced = {cpuUsMsg: r1(((cpu() - w0) * 1000) / 20000), msgs: w.msgsPerSec}
  const l0 = loadavg()[0]
  const c0 = cpu()
  const r = await runBench(target, params, {messages: Number(messages), mode: 'durable', rate: Number(rate), size: 256, window: 500})
  const c1 = cpu()
  console.log(JSON.stringify({conf: r.confirmMs, cpuUsMsg: r1(((c1 - c0) * 1000) / Number(messages)), e2e: r.latencyMs, label, load: [r1(l0), r1(loadavg()[0])], msgs: r.msgsPerSec, rate: Number(rate), unpaced}))
} finally {
  await priv.stop()
}
