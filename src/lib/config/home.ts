import {homedir} from 'node:os'
import {join, resolve} from 'node:path'

import {checkName} from '../util/names.js'

/**
 * Where mq keeps everything. Scripts rely on this layout; docs/home.md documents it.
 *   config.yaml
 *   pki/ca.crt ca.key crl.pem index.json issued/<name>.crt|.key
 *   keys/<name>.pub|.key|.crt        end-to-end identities
 *   secrets/                          records.key and other server secrets
 *   data/                             embedded stores
 *   relay/                            the relay client's identity
 */
export class MqHome {
  readonly root: string

  constructor(root: string) {
    this.root = resolve(root)
  }

  static resolve(flag?: string, env: NodeJS.ProcessEnv = process.env): MqHome {
    return new MqHome(flag ?? env.MQ_HOME ?? join(homedir(), '.mq'))
  }

  get config(): string {
    return join(this.root, 'config.yaml')
  }

  get pki(): string {
    return join(this.root, 'pki')
  }

  get caCert(): string {
    return join(this.pki, 'ca.crt')
  }

  get caKey(): string {
    return join(this.pki, 'ca.key')
  }

  get crl(): string {
    return join(this.pki, 'crl.pem')
  }

  get issued(): string {
    return join(this.pki, 'issued')
  }

  issuedCert(name: string): string {
    return join(this.issued, `${checkName(name)}.crt`)
  }

  issuedKey(name: string): string {
    return join(this.issued, `${checkName(name)}.key`)
  }

  get keys(): string {
    return join(this.root, 'keys')
  }

  get secrets(): string {
    return join(this.root, 'secrets')
  }

  get data(): string {
    return join(this.root, 'data')
  }

  get relay(): string {
    return join(this.root, 'relay')
  }
}
