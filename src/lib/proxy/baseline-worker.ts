/**
 * The proxy bench's baseline server, on a thread of its own as the proxy has a process of its own:
 * node's HTTPS server with the proxy's TLS settings, answering 202 to every request without doing
 * anything. The parent posts nothing but `close`; the thread posts its port once it listens.
 */
import {createServer} from 'node:https'
import type {AddressInfo} from 'node:net'
import {parentPort, workerData} from 'node:worker_threads'

import {MqHome} from '../config/home.js'
import {serverTlsOptions} from '../pki/index.js'

const {home} = workerData as {home: string}
const QUEUED = Buffer.from('{"status":"queued"}')
const srv = createServer({...serverTlsOptions(new MqHome(home), 'baseline'), minVersion: 'TLSv1.2', rejectUnauthorized: true, requestCert: true}, (req, res) => {
  req.resume()
  req.on('end', () => {
    // framed like the proxy's answers (content-length, not chunked)
    res.writeHead(202, {'content-length': QUEUED.length, 'content-type': 'application/json'})
    res.end(QUEUED)
  })
})
srv.keepAliveTimeout = 65_000
srv.listen(0, '127.0.0.1', () => parentPort!.postMessage({port: (srv.address() as AddressInfo).port}))
parentPort!.on('message', () => {
  srv.closeAllConnections()
  srv.close(() => process.exit(0))
})
