import {MqHome} from '../../src/lib/config/home.js'
import {defaultConfig} from '../../src/lib/config/load.js'
import {CertificateAuthority} from '../../src/lib/pki/index.js'

/** A CA in a temp home with the given server and client certificates (fast: RSA-2048 CA for tests that are not about the CA). */
export async function testPki(dir: string, opts: {servers?: string[]; clients?: string[]} = {}): Promise<{home: MqHome; ca: CertificateAuthority}> {
  const home = new MqHome(dir)
  const ca = CertificateAuthority.open(home, defaultConfig().pki)
  await ca.ensureDevelopment({clients: opts.clients ?? [], servers: opts.servers ?? []})
  return {ca, home}
}
