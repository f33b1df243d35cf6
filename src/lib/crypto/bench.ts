/**
 * In-process cost of the envelope, without a broker: how many messages per second one core
 * seals and opens, next to a plain copy of the same payloads. `mq bench e2e` measures the
 * end-to-end figure through a running broker.
 */
import {generateKeyPairSync} from 'node:crypto'

import {EnvelopeOpener, EnvelopeSealer} from './envelope.js'

export interface EnvelopeBenchResult {
  messages: number
  size: number
  sealPerSec: number
  openPerSec: number
  keysCreated: number
  unwraps: number
  overheadBytes: number
}

export async function benchEnvelope(opts: {messages?: number; size?: number; maxMessages?: number} = {}): Promise<EnvelopeBenchResult> {
  const messages = opts.messages ?? 10_000
  const size = opts.size ?? 256
  const enc = generateKeyPairSync('rsa', {modulusLength: 2048})
  const sig = generateKeyPairSync('rsa', {modulusLength: 2048})
  const sealer = new EnvelopeSealer({maxMessages: opts.maxMessages, recipients: [{encPublicKey: enc.publicKey, name: 'bob'}], sender: {name: 'alice', signPrivateKey: sig.privateKey}})
  const opener = new EnvelopeOpener({identity: {encPrivateKey: enc.privateKey, name: 'bob'}, resolveSender: async () => sig.publicKey})
  const payload = Buffer.alloc(size, 0x61)
  const sealed: Buffer[] = []
  let t = process.hrtime.bigint()
  for (let i = 0; i < messages; i++) sealed.push(sealer.seal(payload).envelope)
  const sealNs = Number(process.hrtime.bigint() - t)
  t = process.hrtime.bigint()
  for (const e of sealed) await opener.open(e)
  const openNs = Number(process.hrtime.bigint() - t)
  return {
    keysCreated: sealer.keysCreated,
    messages,
    openPerSec: Math.round((messages * 1e9) / openNs),
    overheadBytes: sealed[0].length - size,
    sealPerSec: Math.round((messages * 1e9) / sealNs),
    size,
    unwraps: opener.unwraps,
  }
}
