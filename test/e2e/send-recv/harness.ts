import {type ChildProcess, spawn} from 'node:child_process'
import {writeFileSync} from 'node:fs'

import type {BrokerClient} from '../../../src/lib/client/client.js'
import {connectBroker} from '../../../src/lib/client/connect.js'
import {MqHome} from '../../../src/lib/config/home.js'
import {defaultConfig} from '../../../src/lib/config/load.js'
import {CertificateAuthority} from '../../../src/lib/pki/index.js'
import {BIN, ROOT} from '../../helpers/cli.js'
import {tempHome} from '../../helpers/home.js'
import {freePort} from '../../helpers/services.js'

export interface TestBroker {
  home: MqHome
  dir: string
  port: number
  ciphermqPort: number
  /** env for runCli: MQ_HOME and MQ_BROKER */
  env: NodeJS.ProcessEnv
  ca: CertificateAuthority
  client(): Promise<BrokerClient>
  stop(): Promise<void>
}

/** A real `mq broker start` subprocess in a temp home (it creates the CA and the admin identity), plus e2e identities. */
export async function startTestBroker(identities: string[], opts: {ciphermq?: boolean} = {}): Promise<TestBroker> {
  const t = tempHome('mq-e2e-')
  const port = await freePort()
  const apiPort = await freePort()
  const ciphermqPort = await freePort()
  const args = [BIN, 'broker', 'start', '--port', String(port), '--api-port', String(apiPort)]
  if (opts.ciphermq) {
    args.push('--ciphermq', '--ciphermq-port', String(ciphermqPort))
    // the listener's clients reach nothing until granted: the legacy queue and exchange of the tests
    writeFileSync(`${t.dir}/config.yaml`, 'broker:\n  ciphermq:\n    queues: [legacy]\n    exchanges: [legacy_ex]\n')
  }
  const child: ChildProcess = spawn(process.execPath, args, {cwd: ROOT, env: {...process.env, MQ_HOME: t.dir, NO_COLOR: '1'}, stdio: ['ignore', 'ignore', 'pipe']})
  let log = ''
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`broker did not start:\n${log}`)), 30_000)
    child.stderr!.on('data', (d: Buffer) => {
      log += d.toString()
      if (log.includes('broker ready')) {
        clearTimeout(timer)
        resolve()
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`broker exited with ${code}:\n${log}`))
    })
  })
  const home = new MqHome(t.dir)
  const config = defaultConfig()
  const ca = CertificateAuthority.open(home, config.pki)
  for (const name of identities) await ca.keygen(name)
  const broker = `127.0.0.1:${port}`
  return {
    ca,
    ciphermqPort,
    client: () => connectBroker(home, config, {broker}),
    dir: t.dir,
    env: {MQ_BROKER: broker, MQ_HOME: t.dir},
    home,
    port,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r))
        child.kill('SIGTERM')
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))])
        if (child.exitCode === null) child.kill('SIGKILL')
      }
      t.cleanup()
    },
  }
}
