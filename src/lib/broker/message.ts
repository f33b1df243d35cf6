/**
 * A message as the engine holds it. A plain record so that the store can depend on it without
 * depending on the engine (the engine depends on the store).
 */
export interface Message {
  seq: number
  messageId: string
  exchange: string
  routingKey: string
  body: Buffer
  headers: Record<string, string>
  timestamp: number
  deliveryCount: number
  redelivered: boolean
  expiresAt: number
}
