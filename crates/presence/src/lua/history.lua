-- Reads a channel's history: its last offset and epoch and, for a recovery
-- (`since`) or a page of the History API, the publications after an
-- offset. Starts an epoch for a channel that has none, so that a
-- subscriber's position holds from its first subscription on, and keeps the
-- epoch alive while the channel is read.
--
-- KEYS[1] P..'history:'..channel (a list of `<offset> <data>`, oldest
-- first: publish.lua), KEYS[2] P..'meta:'..channel
-- ARGV[1] meta ttl (ms), ARGV[2] an epoch for a history that starts now,
-- ARGV[3] mode: 'top', 'recover' or 'page',
-- ARGV[4] the offset after which publications are wanted,
-- ARGV[5] the epoch of that offset ('recover'), ARGV[6] the most returned
-- ('page'), ARGV[7] the offset below which they are wanted (0: none;
-- 'page'), ARGV[8] '1' for the newest first ('page').
-- Returns {offset, epoch, status, offset1, data1, offset2, data2, ...}:
-- status 1 with the publications (recovered, or a page), 0 when a recovery
-- is not possible (another epoch, trimmed or expired, a position past the
-- end, or a list that does not hold every offset it should).
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 'o', 0)
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
local top = tonumber(redis.call('HGET', KEYS[2], 'o') or '0')
local mode = ARGV[3]
if mode == 'top' then
  return {top, epoch, 1}
end
local after = tonumber(ARGV[4])
local recover = mode == 'recover'
if recover then
  if ARGV[5] ~= epoch then
    return {top, epoch, 0}
  end
  if after > top then
    -- A position past the end: the client read a history that is not this
    -- one (a failover lost writes). It starts again under a new epoch.
    epoch = ARGV[2]
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'e', epoch)
    return {top, epoch, 0}
  end
  if after == top then
    return {top, epoch, 1}
  end
end
local len = redis.call('LLEN', KEYS[1])
-- The list ends at `top`: offset `o` is at index `o - first`.
local first = top - len + 1
local reply = {top, epoch, 1}
if recover then
  if after + 1 < first then
    -- Trimmed past the position, or expired.
    return {top, epoch, 0}
  end
  local expected = after + 1
  for _, entry in ipairs(redis.call('LRANGE', KEYS[1], after + 1 - first, -1)) do
    local space = string.find(entry, ' ', 1, true)
    local offset = space and tonumber(string.sub(entry, 1, space - 1))
    if offset ~= expected then
      return {top, epoch, 0}
    end
    reply[#reply + 1] = offset
    reply[#reply + 1] = string.sub(entry, space + 1)
    expected = offset + 1
  end
  if expected ~= top + 1 then
    return {top, epoch, 0}
  end
  return reply
end
-- A page: the offsets above `after` and below `before` (0: none) that are
-- kept, at most `limit`: the oldest of them, or the newest, newest first.
local before = tonumber(ARGV[7])
local limit = tonumber(ARGV[6])
local newest_first = ARGV[8] == '1'
local lo = math.max(after + 1, first)
local hi = top
if before > 0 then
  hi = math.min(hi, before - 1)
end
if lo > hi then
  return reply
end
if newest_first then
  lo = math.max(lo, hi - limit + 1)
else
  hi = math.min(hi, lo + limit - 1)
end
local entries = redis.call('LRANGE', KEYS[1], lo - first, hi - first)
local from, to, step = 1, #entries, 1
if newest_first then
  from, to, step = #entries, 1, -1
end
for i = from, to, step do
  local entry = entries[i]
  local space = string.find(entry, ' ', 1, true)
  local offset = space and tonumber(string.sub(entry, 1, space - 1))
  -- Each under its own offset, whatever the list holds.
  if offset and offset > after and (before == 0 or offset < before) then
    reply[#reply + 1] = offset
    reply[#reply + 1] = string.sub(entry, space + 1)
  end
end
return reply
