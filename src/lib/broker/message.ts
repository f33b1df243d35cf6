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
  /**
   * The status journal's two 32-bit hashes of messageId (StatusJournal.hash), taken once when the
   * message is published instead of again at each status change; 0 and 0 = not taken yet.
   */
  idHash1: number
  idHash2: number
}
