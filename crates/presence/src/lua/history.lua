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
-- ('page').
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
-- The list ends at `top`, so `after + 1` is `top - after` from its end.
local len = redis.call('LLEN', KEYS[1])
local start = len - (top - after)
local stop = -1
if start < 0 then
  if recover then
    -- Trimmed past the position, or expired.
    return {top, epoch, 0}
  end
  start = 0
end
if not recover then
  stop = start + tonumber(ARGV[6]) - 1
end
local reply = {top, epoch, 1}
local expected = after + 1
for _, entry in ipairs(redis.call('LRANGE', KEYS[1], start, stop)) do
  local space = string.find(entry, ' ', 1, true)
  local offset = space and tonumber(string.sub(entry, 1, space - 1))
  if recover and offset ~= expected then
    return {top, epoch, 0}
  end
  if offset and offset > after then
    reply[#reply + 1] = offset
    reply[#reply + 1] = string.sub(entry, space + 1)
    expected = offset + 1
  end
end
if recover and expected ~= top + 1 then
  return {top, epoch, 0}
end
return reply
