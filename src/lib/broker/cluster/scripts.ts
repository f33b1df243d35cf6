/**
 * The Lua scripts of cluster mode. Each touches the keys of one queue only (one hash tag, so one
 * Redis Cluster slot) and runs atomically, which is what makes claims and fencing safe: an entry
 * is moved, acknowledged or dead-lettered only by the consumer that still owns it in the group's
 * pending entries list.
 *
 * Stream entries: see entry.ts (one packed field p, plus x, d, r; entries of the older layout carry
 * m, e, k, h, b, t instead of p, and every script still handles them).
 */
import type {Cluster, Redis} from 'ioredis'

/** pending entry of `sid` when `owner` still holds it: {sid, consumer, idle, times} or false */
const OWNED = `
local function owned(s, sid, owner)
  local p = redis.call('XPENDING', s, 'g', sid, sid, 1)
  if p[1] and p[1][2] == owner then return p[1] end
  return false
end
`


/** one command with many arguments, in chunks (Lua's unpack has a stack limit) */
const CHUNKED = `
local function chunked(cmd, key, head, list, step)
  for i = 1, #list, step do
    local part = {}
    for j = i, math.min(i + step - 1, #list) do part[#part + 1] = list[j] end
    if head then redis.call(cmd, key, head, unpack(part)) else redis.call(cmd, key, unpack(part)) end
  end
end
`

const SETTLE_ONE = `
local function settle(s, ids, done, log, sid, mid, code, cap)
  redis.call('XACK', s, 'g', sid)
  redis.call('XDEL', s, sid)
  if redis.call('HGET', ids, mid) == sid then redis.call('HDEL', ids, mid) end
  redis.call('HSET', done, mid, code)
  redis.call('RPUSH', log, mid)
  if redis.call('LLEN', log) > cap then
    local old = redis.call('LPOP', log)
    if old then redis.call('HDEL', done, old) end
  end
end
`

/** the message id of an entry's fields, in either layout (the packed value holds it at byte 10) */
const ENTRY_MID = `
local function entryMid(f)
  for k = 1, #f, 2 do
    if f[k] == 'p' then return (struct.unpack('>I4c0', f[k + 1], 10)) end
    if f[k] == 'm' then return f[k + 1] end
  end
  return ''
end
`

/**
 * One run takes every publish a node had for one queue in one event-loop turn, in arrival order, so
 * Redis fsyncs them as one AOF write and a duplicate id later in the batch sees the earlier one.
 * When the node has local consumers with room, the same run reads up to `claim` ready entries for
 * `consumer` (as its XREADGROUP would), so the node delivers them without another round trip; an
 * entry of this batch comes back as its index only (the node has the message), others whole.
 * KEYS stream, ids, dedupe. ARGV now, dedupe window ms, dedupe max, max length (0 none), consumer,
 * claim, n, TTL ms (0 none: else x = timestamp + TTL), dedupe flags (one '0'/'1' per message, or
 * empty: none), then the batch: one argument, per message a u32 length and its packed value
 * (entry.ts), so a batch costs the node the same few arguments whatever its size.
 * Returns {stored flags: one '1' stored / '0' duplicate per message, entries over max length now
 * pending for `consumer`, claimed entries of this batch: "entry-id index entry-id index ...",
 * claimed older entries (whole, in stream order, all before this batch's)}.
 */
export const PUBLISH =
  CHUNKED +
  `
local s, ids, dd = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local maxlen = tonumber(ARGV[4])
local claim = tonumber(ARGV[6])
local n = tonumber(ARGV[7])
local ttl = tonumber(ARGV[8])
local dflags = ARGV[9]
local batch = ARGV[10]
local pos = 1
local out = {}
local added = {}
local deduped = false
-- the id index and the dedupe set are written once for the batch, after the XADDs
local index, seen, scored = {}, {}, {}
for j = 1, n do
  local p
  p, pos = struct.unpack('>I4c0', batch, pos)
  local mid = struct.unpack('>I4c0', p, 10)
  local dedupe = string.byte(dflags, j) == 49
  if dedupe then deduped = true end
  if dedupe and (seen[mid] or redis.call('ZSCORE', dd, mid)) then
    out[j] = '0'
  else
    local id
    if ttl > 0 then
      id = redis.call('XADD', s, '*', 'p', p, 'x', string.format('%d', struct.unpack('>d', p, 2) + ttl))
    else
      id = redis.call('XADD', s, '*', 'p', p)
    end
    added[id] = j
    index[#index + 1] = mid
    index[#index + 1] = id
    if dedupe then
      seen[mid] = true
      scored[#scored + 1] = now
      scored[#scored + 1] = mid
    end
    out[j] = '1'
  end
end
chunked('HSET', ids, nil, index, 1000)
if deduped then
  chunked('ZADD', dd, nil, scored, 1000)
  redis.call('ZREMRANGEBYSCORE', dd, '-inf', now - tonumber(ARGV[2]))
  redis.call('ZREMRANGEBYRANK', dd, 0, -tonumber(ARGV[3]) - 1)
end
-- delivering beats dropping: the local consumers take theirs before the max-length trim
local mine, others = {}, {}
if claim > 0 then
  local r = redis.call('XREADGROUP', 'GROUP', 'g', ARGV[5], 'COUNT', claim, 'STREAMS', s, '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      local j = added[e[1]]
      if j then
        mine[#mine + 1] = e[1]
        mine[#mine + 1] = j
      else
        others[#others + 1] = e
      end
    end
  end
end
local trimmed = {}
if maxlen > 0 then
  local ready = redis.call('XLEN', s) - redis.call('XPENDING', s, 'g')[1]
  if ready > maxlen then
    local r = redis.call('XREADGROUP', 'GROUP', 'g', ARGV[5], 'COUNT', ready - maxlen, 'STREAMS', s, '>')
    if r then trimmed = r[1][2] end
  end
end
return {table.concat(out), trimmed, table.concat(mine, ' '), others}
`

/**
 * KEYS stream, ids, done, doneLog. ARGV status code (-1: record none), done capacity, then triples
 * (entry id, message id, owner). Acknowledges each entry its owner still holds; returns one '1'/'0'
 * per triple ('0': claimed elsewhere meanwhile), as one string.
 */
export const SETTLE =
  OWNED +
  CHUNKED +
  `
local s, ids, done, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local code, cap = ARGV[1], tonumber(ARGV[2])
-- what each owner still holds: one XPENDING over the batch's id range per owner, not one per entry
-- (an entry of the range missing from the answer is not the owner's; a clipped answer falls back to owned)
local range = {}
for i = 3, #ARGV, 3 do
  local o = ARGV[i + 2]
  local r = range[o]
  if not r then
    r = {n = 0, held = {}}
    range[o] = r
  end
  r.n = r.n + 1
  local ms, sq = string.match(ARGV[i], '^(%d+)-(%d+)$')
  if ms then
    ms, sq = tonumber(ms), tonumber(sq)
    if not r.lo or ms < r.lo[1] or (ms == r.lo[1] and sq < r.lo[2]) then r.lo = {ms, sq, ARGV[i]} end
    if not r.hi or ms > r.hi[1] or (ms == r.hi[1] and sq > r.hi[2]) then r.hi = {ms, sq, ARGV[i]} end
  else
    r.odd = true
  end
end
for o, r in pairs(range) do
  if r.lo then
    local limit = 4 * r.n + 100
    local p = redis.call('XPENDING', s, 'g', r.lo[3], r.hi[3], limit, o)
    for _, x in ipairs(p) do r.held[x[1]] = true end
    if #p >= limit then r.odd = true end
  end
end
local out = {}
-- the writes once for the batch (an entry twice in one batch settles once)
local sids, codes, mids, seen = {}, {}, {}, {}
for i = 3, #ARGV, 3 do
  local sid, mid, o = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local r = range[o]
  if not seen[sid] and (r.held[sid] or (r.odd and owned(s, sid, o))) then
    seen[sid] = true
    sids[#sids + 1] = sid
    codes[#codes + 1] = mid
    codes[#codes + 1] = code
    mids[#mids + 1] = mid
    out[#out + 1] = '1'
  else
    out[#out + 1] = '0'
  end
end
-- the id index forgets a message only while it still points at this entry (a later copy keeps its own)
local gone = {}
for i = 1, #mids, 1000 do
  local part = {}
  for j = i, math.min(i + 999, #mids) do part[#part + 1] = mids[j] end
  local cur = redis.call('HMGET', ids, unpack(part))
  for j = 1, #part do
    if cur[j] == sids[i + j - 1] then gone[#gone + 1] = part[j] end
  end
end
if #sids > 0 then
  chunked('XACK', s, 'g', sids, 1000)
  chunked('XDEL', s, nil, sids, 1000)
  chunked('HDEL', ids, nil, gone, 1000)
end
if #sids > 0 and code ~= '-1' then
  chunked('HSET', done, nil, codes, 1000)
  chunked('RPUSH', log, nil, mids, 1000)
  local over = redis.call('LLEN', log) - cap
  while over > 0 do
    local old = redis.call('LPOP', log, math.min(over, 1000))
    if not old then break end
    redis.call('HDEL', done, unpack(old))
    over = over - #old
  end
end
return table.concat(out)
`

/**
 * Puts pending entries back at the tail of their queue as new entries, delivery count kept and
 * flagged redelivered: a nack, a closed connection, or the entries of dead consumers (claim).
 * KEYS stream, ids. ARGV mode (ids|dead), me, delivery limit, min idle ms, delivered (1: the
 * deliveries count; 0: read but never handed out), then for ids: pairs (entry id, owner); for
 * dead: the live consumer names.
 * An entry at the delivery limit is not requeued but claimed by `me` and returned, for the node to
 * dead-letter. Returns {moved, {{entry id, deliveries, fields}...}}.
 */
export const MOVE =
  OWNED +
  `
local s, ids = KEYS[1], KEYS[2]
local mode, me, limit, minIdle, delivered = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local moved = 0
local dead = {}
local function move(sid, times)
  local e = redis.call('XRANGE', s, sid, sid)[1]
  if not e then
    redis.call('XACK', s, 'g', sid)
    return
  end
  local f = e[2]
  local nf = {}
  local d = 0
  local r = '0'
  local mid = ''
  for k = 1, #f, 2 do
    local name = f[k]
    if name == 'd' then d = tonumber(f[k + 1])
    elseif name == 'r' then r = f[k + 1]
    else
      nf[#nf + 1] = name
      nf[#nf + 1] = f[k + 1]
      if name == 'm' then mid = f[k + 1] elseif name == 'p' then mid = struct.unpack('>I4c0', f[k + 1], 10) end
    end
  end
  local add = times
  if not delivered then add = times - 1 end
  d = d + add
  if add > 0 then r = '1' end
  if limit > 0 and d >= limit then
    redis.call('XCLAIM', s, 'g', me, 0, sid, 'JUSTID')
    dead[#dead + 1] = {sid, d, f}
    return
  end
  redis.call('XACK', s, 'g', sid)
  redis.call('XDEL', s, sid)
  if d > 0 then
    nf[#nf + 1] = 'd'
    nf[#nf + 1] = tostring(d)
  end
  if r == '1' then
    nf[#nf + 1] = 'r'
    nf[#nf + 1] = '1'
  end
  local nid = redis.call('XADD', s, '*', unpack(nf))
  if mid ~= '' and redis.call('HGET', ids, mid) == sid then redis.call('HSET', ids, mid, nid) end
  moved = moved + 1
end
if mode == 'ids' then
  for i = 6, #ARGV, 2 do
    local p = owned(s, ARGV[i], ARGV[i + 1])
    if p then move(ARGV[i], tonumber(p[4])) end
  end
else
  local live = {}
  for i = 6, #ARGV do live[ARGV[i]] = true end
  local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', s, 'g')
  if not ok then return {0, {}} end
  for _, c in ipairs(consumers) do
    local info = {}
    for k = 1, #c, 2 do info[c[k]] = c[k + 1] end
    local name = info['name']
    if not live[name] and name ~= me and tonumber(info['idle']) >= minIdle then
      local p = redis.call('XPENDING', s, 'g', 'IDLE', minIdle, '-', '+', 1000, name)
      for _, x in ipairs(p) do move(x[1], tonumber(x[4])) end
      if #redis.call('XPENDING', s, 'g', '-', '+', 1, name) == 0 then redis.call('XGROUP', 'DELCONSUMER', s, 'g', name) end
    end
  end
end
return {moved, dead}
`

/**
 * Takes the expired entries at the head of a queue's ready part (pending for `me`, for the node to
 * dead-letter). KEYS stream. ARGV now, me, max. Returns the entries.
 */
export const EXPIRE = `
local s = KEYS[1]
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', s)
if not ok then return {} end
local last = nil
for _, g in ipairs(groups) do
  local info = {}
  for k = 1, #g, 2 do info[g[k]] = g[k + 1] end
  if info['name'] == 'g' then last = info['last-delivered-id'] end
end
if not last then return {} end
local now = tonumber(ARGV[1])
local head = redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', tonumber(ARGV[3]))
local n = 0
for _, e in ipairs(head) do
  local x = nil
  for k = 1, #e[2], 2 do if e[2][k] == 'x' then x = tonumber(e[2][k + 1]) end end
  if not x or x > now then break end
  n = n + 1
end
if n == 0 then return {} end
local r = redis.call('XREADGROUP', 'GROUP', 'g', ARGV[2], 'COUNT', n, 'STREAMS', s, '>')
if r then return r[1][2] end
return {}
`

/** KEYS stream, ids, done, doneLog. ARGV me, status code, done capacity, max. Settles up to max ready entries; returns how many. */
export const PURGE =
  SETTLE_ONE +
  ENTRY_MID +
  `
local s = KEYS[1]
local r = redis.call('XREADGROUP', 'GROUP', 'g', ARGV[1], 'COUNT', tonumber(ARGV[4]), 'STREAMS', s, '>')
if not r then return 0 end
local n = 0
for _, e in ipairs(r[1][2]) do
  local mid = entryMid(e[2])
  settle(s, KEYS[2], KEYS[3], KEYS[4], e[1], mid, ARGV[2], tonumber(ARGV[3]))
  n = n + 1
end
return n
`

/** KEYS heartbeats, nodes. ARGV consumer, info JSON. Stamps the consumer with Redis's clock; returns that time (ms). */
export const HEARTBEAT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return now
`

/** KEYS heartbeats, nodes. ARGV forget-after ms. Returns {Redis time ms, flat heartbeats}; forgets consumers silent for longer. */
export const NODES = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hb = redis.call('HGETALL', KEYS[1])
local keep = {}
for i = 1, #hb, 2 do
  if now - tonumber(hb[i + 1]) > tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], hb[i])
    redis.call('HDEL', KEYS[2], hb[i])
  else
    keep[#keep + 1] = hb[i]
    keep[#keep + 1] = hb[i + 1]
  end
end
return {now, keep}
`

/** KEYS[1] crl hash; ARGV pem, order (crlOrder): keeps the newer CRL, returns 1 when this one replaced it */
const SHARE_CRL = `
local cur = tonumber(redis.call('HGET', KEYS[1], 'order') or '0')
if tonumber(ARGV[2]) <= cur then return 0 end
redis.call('HSET', KEYS[1], 'pem', ARGV[1], 'order', ARGV[2])
return 1
`

export const SCRIPTS = {mqShareCrl: [1, SHARE_CRL], mqExpire: [1, EXPIRE], mqHeartbeat: [2, HEARTBEAT], mqMove: [2, MOVE], mqNodes: [2, NODES], mqPublish: [3, PUBLISH], mqPurge: [4, PURGE], mqSettle: [4, SETTLE]} as const
export type ScriptName = keyof typeof SCRIPTS

export type RedisClient = Redis | Cluster

export function defineScripts(r: RedisClient): void {
  for (const [name, [numberOfKeys, lua]] of Object.entries(SCRIPTS)) r.defineCommand(name, {lua, numberOfKeys})
}

/** Runs a script; replies keep bulk strings as Buffers (bodies are binary). */
export function runScript(r: RedisClient, name: ScriptName, keys: string[], args: (string | number | Buffer)[]): Promise<unknown> {
  const fn = (r as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[`${name}Buffer`]
  return fn.call(r, ...keys, ...args)
}
