/** Ctrl-C (SIGINT) of a foreground server: it says it stops, frees its port and exits 0, with nothing on stdout. */
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {createServer} from 'node:net'
import {test} from 'node:test'

import {BIN, ROOT} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {freePort} from '../../helpers/services.js'

async function interrupt(args: string[], ready: RegExp, home: string): Promise<{code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string}> {
  const child = spawn(process.execPath, [BIN, ...args, '--home', home], {cwd: ROOT, env: {...process.env, NO_COLOR: '1'}, stdio: ['ignore', 'pipe', 'pipe']})
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])))
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`not ready within 60 s:\n${stderr}`)), 60_000)
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
      if (ready.test(stderr)) {
        clearTimeout(t)
        resolve()
      }
    })
    child.once('exit', () => reject(new Error(`exited early:\n${stderr}`)))
  })
  child.kill('SIGINT')
  const [code, signal] = await exited
  return {code, signal, stderr, stdout}
}

async function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

test('Ctrl-C stops mq broker start and mq relay start cleanly (exit 0, port freed)', async () => {
  const h = tempHome('mq-qa-sigint-')
  try {
    const port = await freePort()
    const b = await interrupt(['broker', 'start', '--port', String(port), '--api-port', String(await freePort())], /broker ready/, h.dir)
    assert.equal(b.code, 0, `signal ${b.signal}\n${b.stderr}`)
    assert.equal(b.stdout, '')
    assert.match(b.stderr, /Created a development CA.* in .*pki[.;]/) // says where the dev CA went
    assert.match(b.stderr, /shutting down signal=SIGINT/)
    assert.doesNotMatch(b.stderr, /ERROR|Error:/)
    assert.ok(await portIsFree(port))

    const rport = await freePort()
    const r = await interrupt(['relay', 'start', '--port', String(rport)], /relay listening/, h.dir)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /relay stopping/)
    assert.doesNotMatch(r.stderr, /ERROR|Error:/)
    assert.ok(await portIsFree(rport))
  } finally {
    h.cleanup()
  }
})
