/**
 * Issue 18, failure 2: the CipherMQ listener (plain TCP, unauthenticated) against connections
 * that drip a byte every 2 s and never end a line. A real client must still connect while 256 of
 * them are open, a started line has a deadline, and a connection that does nothing is closed.
 */
import assert from 'node:assert/strict'
import net from 'node:net'
import {test} from 'node:test'

import {CipherMqListener} from '../../../src/lib/broker/ciphermq.js'
import {ALLOW_ALL, Engine} from '../../../src/lib/broker/engine.js'
import {silentLogger} from '../../../src/lib/log.js'
import {waitFor} from '../../helpers/services.js'

async function listener(opts: {lineTimeoutMs: number; idleTimeoutMs: number}): Promise<{port: number; stop: () => Promise<void>}> {
  const engine = new Engine()
  const l = new CipherMqListener({engine, logger: silentLogger, maxConnections: 256, maxLine: 4096, perms: ALLOW_ALL, ...opts})
  const port = await l.listen(0, '127.0.0.1')
  return {
    port,
    async stop() {
      await l.close()
      engine.stop()
    },
  }
}

/** A client connection: `cmd` sends a line and resolves with the reply; `closed` resolves with everything received. */
function client(port: number, localAddress?: string): {sock: net.Socket; cmd: (l: string) => Promise<string>; closed: Promise<{text: string; ms: number}>} {
  const t0 = Date.now()
  const sock = net.connect({host: '127.0.0.1', localAddress, port})
  sock.on('error', () => {})
  sock.setEncoding('utf8')
  let text = ''
  const lines: string[] = []
  let pending: ((l: string) => void) | undefined
  let from = 0
  sock.on('data', (d: string) => {
    text += d
    let nl: number
    while ((nl = text.indexOf('\n', from)) >= 0) {
      lines.push(text.slice(from, nl))
      from = nl + 1
    }
    if (pending && lines.length > 0) {
      const p = pending
      pending = undefined
      p(lines.shift()!)
    }
  })
  const closed = new Promise<{text: string; ms: number}>((r) => sock.once('close', () => r({ms: Date.now() - t0, text})))
  return {
    closed,
    cmd: (l) =>
      new Promise((resolve) => {
        sock.write(l + '\n')
        if (lines.length > 0) resolve(lines.shift()!)
        else pending = resolve
      }),
    sock,
  }
}

/** Sends one byte of a command that never ends every 2 s. */
function drip(port: number, localAddress?: string): {sock: net.Socket; closed: Promise<{text: string; ms: number}>} {
  const c = client(port, localAddress)
  const t = setInterval(() => c.sock.writable && c.sock.write('x'), 2000)
  c.sock.once('connect', () => c.sock.write('p'))
  void c.closed.then(() => clearInterval(t))
  return c
}

test('a real client connects while 256 drip connections are open', {timeout: 60_000}, async () => {
  const l = await listener({idleTimeoutMs: 60_000, lineTimeoutMs: 60_000})
  const drips = Array.from({length: 256}, () => drip(l.port))
  let c: ReturnType<typeof client> | undefined
  try {
    // all 256 are in (each sent its first byte; the listener took it)
    await new Promise((r) => setTimeout(r, 1300))
    c = client(l.port)
    const reply = await Promise.race([c.cmd('declare_queue q1'), c.closed.then((x) => `closed: ${x.text.trim()}`)])
    assert.equal(reply, 'Queue declared')
    // the newcomer displaced one drip, not more: the listener is still at its cap of 256
    const gone = await Promise.race([Promise.all(drips.slice(1).map((d) => d.closed)).then(() => true), new Promise((r) => setTimeout(() => r(false), 300))])
    assert.equal(gone, false)
  } finally {
    c?.sock.destroy()
    for (const d of drips) d.sock.destroy()
    await l.stop()
  }
})

test('a started command line must end within line_timeout_ms; a connection doing nothing is closed after idle_timeout_ms', {timeout: 30_000}, async () => {
  const l = await listener({idleTimeoutMs: 1500, lineTimeoutMs: 1000})
  try {
    // a byte every 300 ms: each byte would reset an idle timer, not this deadline
    const d = client(l.port)
    await new Promise((r) => d.sock.once('connect', r))
    assert.equal(await d.cmd('declare_queue q2'), 'Queue declared')
    const t = setInterval(() => d.sock.writable && d.sock.write('x'), 300)
    const t0 = Date.now()
    const r = await Promise.race([d.closed, new Promise<undefined>((res) => setTimeout(() => res(undefined), 4000))])
    clearInterval(t)
    assert.ok(r, 'the dripping connection was still open after 4 s (line_timeout_ms 1000)')
    assert.ok(Date.now() - t0 < 2500, `closed after ${Date.now() - t0} ms`)
    assert.match(r.text, /Error: command line not completed within 1000 ms/)

    // idle: one command, then silence
    const idle = client(l.port)
    assert.equal(await idle.cmd('stats').then((x) => x.startsWith('Stats:')), true)
    // a consumer that only receives is not idle
    const consumer = client(l.port)
    assert.equal(await consumer.cmd('consume q2'), 'Subscribed to queue')
    const closed = await Promise.race([idle.closed, new Promise<undefined>((res) => setTimeout(() => res(undefined), 4000))])
    assert.ok(closed, 'an idle connection was still open after 4 s (idle_timeout_ms 1500)')
    assert.match(closed.text, /Error: idle for 1500 ms/)
    assert.equal(consumer.sock.destroyed, false)
    consumer.sock.destroy()

    // a connection that never sends a complete command is closed at the line deadline from accept
    const silent = client(l.port)
    const s = await Promise.race([silent.closed, new Promise<undefined>((res) => setTimeout(() => res(undefined), 4000))])
    assert.ok(s && s.ms < 2500, 'a silent connection was not closed')
  } finally {
    await l.stop()
  }
})

test('blank lines do not keep a connection alive', {timeout: 20_000}, async () => {
  const l = await listener({idleTimeoutMs: 1000, lineTimeoutMs: 800})
  try {
    const c = client(l.port)
    await new Promise((r) => c.sock.once('connect', r))
    const t = setInterval(() => c.sock.writable && c.sock.write('\n'), 200)
    const r = await Promise.race([c.closed, new Promise<undefined>((res) => setTimeout(() => res(undefined), 4000))])
    clearInterval(t)
    assert.ok(r, 'a connection sending only newlines stayed open')
    await waitFor(() => c.sock.destroyed)
  } finally {
    await l.stop()
  }
})
