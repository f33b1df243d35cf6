/**
 * The proxy bench's baseline server, on a thread of its own as the proxy has a process of its own:
 * node's HTTPS server with the proxy's TLS and server settings, which reads each request body in
 * full (as the proxy must before it can validate it) and answers 202 with the proxy's headers and
 * a body the size of the proxy's answer, without doing anything else. The thread posts its port once
 * it listens; the parent posts `cpu` (answered with this thread's CPU seconds, so the bench can report
 * the baseline's CPU per request beside the proxy's) and `close`.
 */
import {createServer} from 'node:https'
import type {AddressInfo} from 'node:net'
import type {TLSSocket} from 'node:tls'
import {parentPort, workerData} from 'node:worker_threads'

import {MqHome} from '../config/home.js'
import {defaultConfig} from '../config/load.js'
import {readBody, sendError} from '../http/errors.js'
import {serverTlsOptions} from '../pki/index.js'
import {cpuSeconds} from '../util/cpu.js'
import {timeOrderedUuid} from '../wire/ids.js'

const {home} = workerData as {home: string}
const limit = defaultConfig().proxy.max_request_bytes
// an answer shaped and sized like the proxy's (see Accepted in server.ts), built once
const ANSWER = Buffer.from(JSON.stringify({client_id: 'bench', message_id: timeOrderedUuid(), position: 100_000, queued_at: new Date().toISOString(), status: 'queued'}))
const HEADERS = {'cache-control': 'no-store', 'content-length': String(ANSWER.length), 'content-type': 'application/json'}
const srv = createServer({...serverTlsOptions(new MqHome(home), 'baseline'), minVersion: 'TLSv1.2', rejectUnauthorized: true, requestCert: true}, (req, res) => {
  readBody(req, limit).then(
    () => {
      // framed like the proxy's answers (content-length, not chunked)
      res.writeHead(202, HEADERS)
      res.end(ANSWER)
    },
    (error) => sendError(res, error),
  )
})
srv.on('secureConnection', (s: TLSSocket) => s.disableRenegotiation())
srv.keepAliveTimeout = 65_000
srv.headersTimeout = 20_000
srv.requestTimeout = 30_000
srv.listen(0, '127.0.0.1', () => parentPort!.postMessage({port: (srv.address() as AddressInfo).port}))
parentPort!.on('message', (m: string) => {
  if (m === 'cpu') return parentPort!.postMessage({cpu: cpuSeconds('thread')})
  srv.closeAllConnections()
  srv.close(() => process.exit(0))
})
