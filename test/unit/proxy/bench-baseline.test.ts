import assert from 'node:assert/strict'
import {test} from 'node:test'

import {clientTlsOptions} from '../../../src/lib/pki/index.js'
import {benchBaseline} from '../../../src/lib/proxy/bench.js'
import {cpuSeconds} from '../../../src/lib/util/cpu.js'
import {tempHome} from '../../helpers/home.js'
import {testPki} from '../../helpers/pki.js'

const linux = process.platform === 'linux'

test('the proxy bench baseline reports the CPU per request of its server thread and of the load generator, each counted once', async () => {
  const t = tempHome()
  try {
    const {home} = await testPki(t.dir, {clients: ['bench'], servers: ['baseline']})
    const body = (i: number) => Buffer.from(JSON.stringify({message_body: `m ${i}`, sender_number: '+4915200000000'}))
    const process0 = cpuSeconds(process.pid)
    const r = await benchBaseline(t.dir, clientTlsOptions(home, 'bench'), {body, connections: 4, seconds: 1})
    const processUs = ((cpuSeconds(process.pid) ?? 0) - (process0 ?? 0)) * 1e6
    assert.equal(r.errors, 0)
    assert.ok(r.requests > 50, `only ${r.requests} requests`)
    if (!linux) return assert.deepEqual(r.cpu_us_per_request, {loadgen: null, server: null})
    const {loadgen, server} = r.cpu_us_per_request
    // both threads work for every request (TLS both ways, HTTP parse and write)
    assert.ok(server !== null && server > 0 && loadgen !== null && loadgen > 0, JSON.stringify(r.cpu_us_per_request))
    // per thread, not per process: together they are no more than the whole process used (plus clock-tick rounding)
    assert.ok((server + loadgen) * r.requests <= processUs + 30_000, `${server} + ${loadgen} us x ${r.requests} requests > ${processUs} us of the process`)
  } finally {
    t.cleanup()
  }
})
