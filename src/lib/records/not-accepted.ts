/**
 * last_error prefix of a record whose request was answered 503 (not accepted) although the row was
 * written: the proxy could not enqueue it, or the store committed it after the proxy's deadline.
 * Such a record ends `failed` and is never delivered; a retry with the same Idempotency-Key (the
 * same message id) revives it. Its own module so the proxy names it without loading the store.
 */
export const NOT_ACCEPTED = 'E_NOT_ACCEPTED'
