import {type KeyObject, createHash} from 'node:crypto'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'

import type {MqHome} from '../config/home.js'
import {DataError, MqError, PermissionError} from '../errors.js'
import {assertPrivateFile, writeSecretFile} from '../util/fs.js'
import {type Suite, loadPrivateKey} from './crypto.js'

/**
 * The relay client's local state under $MQ_HOME/relay/, every file 0600:
 *   me.json     name, client id, crypto suite, public key
 *   me.key      the RSA private key (PKCS#8 PEM)
 *   peers.json  per peer: client id, public key, shared symmetric key
 */
export interface RelayIdentity {
  name: string
  clientId: Buffer
  suite: Suite
  publicKeyDer: Buffer
  privateKey: KeyObject
  relay: string
  /** registered through the relay's TLS listener */
  tls?: boolean
  /** the TLS client certificate (pki/issued/NAME) it registered with: later commands default to it */
  tlsIdentity?: string
}

export interface Peer {
  name: string
  id: string
  publicKey?: string
  symKey?: string
}

interface MeFile {
  name: string
  client_id: string
  suite: Suite
  public_key: string
  relay: string
  tls?: boolean
  tls_identity?: string
  registered_at: string
}

export function keyFingerprint(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex')
}

export class RelayKeyring {
  constructor(private readonly home: MqHome) {}

  get dir(): string {
    return this.home.relay
  }

  private file(name: string): string {
    return join(this.home.relay, name)
  }

  exists(): boolean {
    return existsSync(this.file('me.json'))
  }

  identity(): RelayIdentity {
    if (!this.exists()) {
      // like a missing --identity: the credentials this client needs are not in this home (77)
      throw new PermissionError('E_RELAY_NOT_REGISTERED', `No relay identity in ${this.home.relay}.`, {hint: 'Try this: mq relay register NAME'})
    }
    assertPrivateFile(this.file('me.json'))
    assertPrivateFile(this.file('me.key'))
    let me: MeFile
    try {
      me = JSON.parse(readFileSync(this.file('me.json'), 'utf8')) as MeFile
    } catch (error) {
      throw new DataError('E_RELAY_IDENTITY', `${this.file('me.json')} is not valid JSON: ${(error as Error).message}`, {hint: 'Try this: restore it from a backup, or register again with another --home.'})
    }
    return {
      clientId: Buffer.from(me.client_id, 'hex'),
      name: me.name,
      privateKey: loadPrivateKey(readFileSync(this.file('me.key'), 'utf8')),
      publicKeyDer: Buffer.from(me.public_key, 'base64'),
      relay: me.relay,
      suite: me.suite,
      tls: me.tls === true,
      tlsIdentity: me.tls_identity,
    }
  }

  saveIdentity(id: Omit<RelayIdentity, 'privateKey'> & {privateKey: KeyObject}): void {
    writeSecretFile(this.file('me.key'), id.privateKey.export({format: 'pem', type: 'pkcs8'}) as string)
    const me: MeFile = {
      client_id: id.clientId.toString('hex'),
      name: id.name,
      public_key: id.publicKeyDer.toString('base64'),
      registered_at: new Date().toISOString(),
      relay: id.relay,
      suite: id.suite,
      tls: id.tls === true,
      ...(id.tlsIdentity ? {tls_identity: id.tlsIdentity} : {}),
    }
    writeSecretFile(this.file('me.json'), JSON.stringify(me, null, 2) + '\n')
  }

  /**
   * Peers by name. A Map, not a plain object: peer names come from other relay users, and a name
   * such as __proto__ or constructor must not reach Object.prototype.
   */
  peers(): Map<string, Peer> {
    const f = this.file('peers.json')
    if (!existsSync(f)) return new Map()
    assertPrivateFile(f)
    let parsed: unknown
    try {
      parsed = JSON.parse(readFileSync(f, 'utf8'))
    } catch (error) {
      throw new DataError('E_RELAY_PEERS', `${f} is not valid JSON: ${(error as Error).message}`, {hint: `Try this: remove ${f}; you will need to exchange keys again.`})
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new DataError('E_RELAY_PEERS', `${f} is not a JSON object of peers.`, {hint: `Try this: remove ${f}; you will need to exchange keys again.`})
    }
    // JSON.parse makes "__proto__" an own property, so Object.entries sees it like any name
    return new Map(Object.entries(parsed as Record<string, Peer>))
  }

  peer(name: string): Peer | undefined {
    return this.peers().get(name)
  }

  peerById(id: Buffer): Peer | undefined {
    const hex = id.toString('hex')
    return [...this.peers().values()].find((p) => p.id === hex)
  }

  savePeer(p: Peer): void {
    const all = this.peers()
    // A name now bound to another id (re-registered elsewhere) starts over: no stale keys.
    const old = all.get(p.name)
    all.set(p.name, old && old.id === p.id ? {...old, ...p} : p)
    // Object.fromEntries defines own properties (a "__proto__" key stays a key, not a prototype)
    writeSecretFile(this.file('peers.json'), JSON.stringify(Object.fromEntries(all), null, 2) + '\n')
  }
}
