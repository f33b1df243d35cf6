import type {PeekedMessage} from '../wire/types.js'

export interface PeekView {
  queue: string
  /** ready messages in the queue (in memory and on disk) */
  ready: number
  messages: (PeekedMessage & {text?: string})[]
}

/** The PEEK answer with each body's size, and its text when it is valid UTF-8 without control characters. */
export function peekView(r: {queue: string; ready: number; messages: PeekedMessage[]}): PeekView {
  return {
    messages: r.messages.map((m) => {
      const raw = Buffer.from(m.body, 'base64')
      const text = raw.toString('utf8')
      const printable = Buffer.from(text, 'utf8').equals(raw) && !/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/.test(text)
      return {...m, ...(printable && !m.truncated ? {text} : {})}
    }),
    queue: r.queue,
    ready: r.ready,
  }
}
