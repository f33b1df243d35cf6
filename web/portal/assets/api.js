// The portal API from the browser: bearer tokens held in sessionStorage (this tab only; no cookies,
// so no CSRF), refreshed transparently when the access token has expired.

const KEY = 'mq.portal.tokens'

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`)
    this.status = status
    this.code = body?.error?.code ?? 'E_HTTP'
  }
}

export const session = {
  get() {
    try {
      return JSON.parse(sessionStorage.getItem(KEY) ?? 'null')
    } catch {
      return null
    }
  },
  set(v) {
    sessionStorage.setItem(KEY, JSON.stringify(v))
  },
  clear() {
    sessionStorage.removeItem(KEY)
  },
}

async function raw(method, path, body, token) {
  const headers = {accept: 'application/json'}
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (token) headers.authorization = `Bearer ${token}`
  const res = await fetch(path, {body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store', credentials: 'omit', headers, method})
  const json = await res.json().catch(() => ({}))
  if (!res.ok) throw new ApiError(res.status, json)
  return json
}

let refreshing = null

/** One refresh at a time: concurrent 401s wait for the same rotation (a second use would count as reuse). */
function refresh() {
  refreshing ??= (async () => {
    const s = session.get()
    if (!s?.refresh_token) throw new ApiError(401, {error: {code: 'E_UNAUTHENTICATED', message: 'Please log in.'}})
    try {
      const pair = await raw('POST', '/portal/auth/refresh', {refresh_token: s.refresh_token})
      session.set({...s, access_token: pair.access_token, refresh_token: pair.refresh_token})
    } catch (e) {
      session.clear()
      throw e
    }
  })().finally(() => {
    refreshing = null
  })
  return refreshing
}

export let onSignedOut = () => {}
export function setSignedOutHandler(fn) {
  onSignedOut = fn
}

/** An authenticated call; an expired access token is refreshed once, then the call is repeated. */
export async function api(method, path, body) {
  const s = session.get()
  try {
    return await raw(method, path, body, s?.access_token)
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401 || e.code !== 'E_TOKEN_EXPIRED') {
      if (e instanceof ApiError && e.status === 401) {
        session.clear()
        onSignedOut()
      }
      throw e
    }
  }
  try {
    await refresh()
  } catch (e) {
    onSignedOut()
    throw e
  }
  return raw(method, path, body, session.get()?.access_token)
}

export async function login(email, password) {
  const r = await raw('POST', '/portal/auth/login', {email, password})
  session.set({access_token: r.access_token, refresh_token: r.refresh_token, user: r.user})
  return r.user
}

export async function logout() {
  try {
    await api('POST', '/portal/auth/logout')
  } catch {}
  session.clear()
}
