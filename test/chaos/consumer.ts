/**
 * A consumer process for the chaos battery (it gets SIGKILLed): consumes a queue with manual acks,
 * appends "<logical id> <redelivered 0|1> <body ok 0|1>" to a file before acking each message, and
 * dies at once, without acking, on the poison message.
 * Usage: node consumer.js PORT HOME QUEUE OUT [POISON_ID]
 */
import {appendFileSync} from 'node:fs'

import {BrokerClient} from '../../src/lib/client/client.js'
import {MqHome} from '../../src/lib/config/home.js'
import {clientTlsOptions} from '../../src/lib/pki/index.js'
import {payloadOk} from './ledger.js'

const [port, home, queue, out, poison] = process.argv.slice(2)
const c = await BrokerClient.connect({host: '127.0.0.1', port: Number(port), timeoutMs: 15_000, tls: {...clientTlsOptions(new MqHome(home), 'admin'), checkServerIdentity: () => undefined}})
c.on('error', () => process.exit(2))
c.on('close', () => process.exit(2))
await c.consume(queue, {prefetch: 50}, (d) => {
  const id = d.body.toString().split('|')[0]
  if (poison && id === poison) process.exit(3)
  appendFileSync(out, `${id} ${d.redelivered ? 1 : 0} ${payloadOk(id, d.body) ? 1 : 0}\n`)
  c.ack(d.deliveryTag)
})
process.stderr.write('consumer ready\n')
