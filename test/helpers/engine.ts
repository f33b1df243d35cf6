import type {Engine, Message} from '../../src/lib/broker/engine.js'

/**
 * The ready messages of a queue, in order, as a consumer would get them (paged-out ones read back from
 * the store), left in the queue: they are taken on a session that is then closed, which returns them.
 */
export function peekQueue(e: Engine, queue: string): Message[] {
  const s = e.openSession('peek', {deliver: () => {}, writable: () => true})
  const out: Message[] = []
  for (let d = e.get(s, queue); d; d = e.get(s, queue)) out.push(d.msg)
  e.closeSession(s)
  return out
}
