import assert from 'node:assert/strict'
import {createHash, randomBytes} from 'node:crypto'
import {createReadStream, createWriteStream, statSync} from 'node:fs'
import {join} from 'node:path'
import {once} from 'node:events'
import {test} from 'node:test'

import {runCli} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {freePort} from '../../helpers/services.js'
import {peakRss, spawnRelay} from './relay-process.js'

const MiB = 1024 * 1024
const SIZE = 200 * MiB

/** Writes `size` pseudo-random bytes in 1 MiB blocks (never all in memory) and returns their sha256. */
async function writeRandomFile(path: string, size: number): Promise<string> {
  const hash = createHash('sha256')
  const out = createWriteStream(path)
  const block = randomBytes(MiB)
  for (let off = 0, i = 0; off < size; off += MiB, i++) {
    // vary every block so a misordered or repeated block changes the hash
    block.writeUInt32LE(i, 0)
    block.writeUInt32LE(i * 2654435761 >>> 0, 512 * 1024)
    const chunk = Buffer.from(block.subarray(0, Math.min(MiB, size - off)))
    hash.update(chunk)
    if (!out.write(chunk)) await once(out, 'drain')
  }
  out.end()
  await once(out, 'finish')
  return hash.digest('hex')
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const c of createReadStream(path)) hash.update(c as Buffer)
  return hash.digest('hex')
}

test('a 200 MiB file crosses the relay byte-identical while the relay stays under 150 MiB resident', async () => {
  const server = tempHome('mq-relay-big-')
  const a = tempHome('mq-relay-big-a-')
  const b = tempHome('mq-relay-big-b-')
  const port = await freePort()
  const relay = await spawnRelay({args: ['--port', String(port)], home: server.dir})
  try {
    const addr = `127.0.0.1:${port}`
    const mq = (home: string, args: string[]) => runCli(['relay', ...args], {home, timeoutMs: 120_000})
    assert.equal((await mq(a.dir, ['register', 'big-alice', '--relay', addr])).code, 0)
    assert.equal((await mq(b.dir, ['register', 'big-bob', '--relay', addr])).code, 0)
    assert.equal((await mq(a.dir, ['send-key', 'big-bob'])).code, 0)
    assert.equal((await mq(b.dir, ['fetch'])).code, 0)

    const file = join(a.dir, 'big.bin')
    const digest = await writeRandomFile(file, SIZE)
    const baseline = peakRss(relay.pid)
    const sent = await mq(a.dir, ['send', 'big-bob', '--file', file, '--json'])
    assert.equal(sent.code, 0, sent.stderr)
    const afterSend = peakRss(relay.pid)
    const out = join(b.dir, 'inbox')
    const got = await mq(b.dir, ['fetch', '--out', out, '--json'])
    assert.equal(got.code, 0, got.stderr)
    const msg = JSON.parse(got.stdout.trim())
    assert.equal(msg.bytes, SIZE)
    assert.equal(statSync(join(out, 'big.bin')).size, SIZE)
    assert.equal(await sha256File(join(out, 'big.bin')), digest)
    const peak = peakRss(relay.pid)
    process.stderr.write(`relay VmHWM: idle ${(baseline / MiB).toFixed(1)} MiB, after send ${(afterSend / MiB).toFixed(1)} MiB, after fetch ${(peak / MiB).toFixed(1)} MiB\n`)
    assert.ok(peak < 150 * MiB, `relay peak RSS ${(peak / MiB).toFixed(1)} MiB`)
  } finally {
    await relay.stop()
    for (const h of [server, a, b]) h.cleanup()
  }
})
