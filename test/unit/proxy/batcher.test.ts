import assert from 'node:assert/strict'
import {describe, it} from 'node:test'

import type {ApiClient} from '../../../src/lib/http/client.js'
import {type Registration, RegisterBatcher} from '../../../src/lib/proxy/batcher.js'

/** A broker client whose register calls stay in flight until the test answers them. */
function fakeBroker() {
  const calls: {messages: Registration[]; answer: () => void}[] = []
  const client = {
    call(_method: string, path: string, body: {messages: Registration[]}) {
      assert.equal(path, '/internal/messages/register')
      return new Promise((resolve) => {
        calls.push({
          answer: () => resolve({results: body.messages.map((m) => ({client_id: m.client_id, created: true, message_id: m.message_id, queued_at: new Date().toISOString(), status: 'queued'}))}),
          messages: body.messages,
        })
      })
    },
  }
  return {calls, client: client as unknown as ApiClient}
}

const reg = (i: number): Registration => ({client_id: 'alice', client_serial: '01', message_body: `m${i}`, message_id: `id-${i}`, sender_number: '+4915200000000'})
/** a few turns of the event loop: a batch that may leave has left by then */
const turn = async () => {
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r))
}

describe('RegisterBatcher', () => {
  it('a lone registration leaves at once; those arriving while it is in flight wait for it and then leave as one batch', async () => {
    const {calls, client} = fakeBroker()
    const b = new RegisterBatcher(client, 500, 4, 0, undefined, 64)
    const first = b.register(reg(0))
    await turn()
    assert.equal(calls.length, 1)
    const rest = Array.from({length: 10}, (_, i) => b.register(reg(i + 1)))
    await turn()
    // with slots free but a batch in flight, ten registrations are not worth a call of their own
    assert.equal(calls.length, 1)
    calls[0].answer()
    assert.equal((await first).message_id, 'id-0')
    await turn()
    assert.equal(calls.length, 2)
    assert.deepEqual(calls[1].messages.map((m) => m.message_id), Array.from({length: 10}, (_, i) => `id-${i + 1}`))
    calls[1].answer()
    assert.deepEqual((await Promise.all(rest)).map((r) => r.message_id), calls[1].messages.map((m) => m.message_id))
  })

  it('once busyBatch registrations wait, another batch leaves beside the one in flight', async () => {
    const {calls, client} = fakeBroker()
    const b = new RegisterBatcher(client, 500, 4, 0, undefined, 8)
    const all = [b.register(reg(0))]
    await turn()
    for (let i = 1; i <= 8; i++) all.push(b.register(reg(i)))
    await turn()
    assert.equal(calls.length, 2)
    assert.equal(calls[1].messages.length, 8)
    for (const c of calls) c.answer()
    assert.equal((await Promise.all(all)).length, 9)
  })
})
