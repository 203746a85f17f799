-- Reads a channel's stream: its last offset and epoch and, for a recovery
-- (`since`) or a page of the History API, the entries after an offset.
-- Starts an epoch for a channel that has none, so that a subscriber's
-- position holds from its first subscription on, and keeps the epoch alive
-- while the channel is read.
--
-- KEYS[1] P..'hist:'..channel, KEYS[2] P..'meta:'..channel
-- ARGV[1] meta ttl (ms), ARGV[2] an epoch for a history that starts now,
-- ARGV[3] mode: 'top', 'recover' or 'page',
-- ARGV[4] the offset after which entries are wanted,
-- ARGV[5] the epoch of that offset ('recover'), ARGV[6] the most entries.
-- Returns {offset, epoch, status, id1, data1, id2, data2, ...}: status 1
-- with the entries (recovered, or a page), 0 when a recovery is not
-- possible (another epoch, trimmed or expired, or a position past the end).
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
if mode == 'recover' then
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
local entries = redis.call('XRANGE', KEYS[1], (after + 1) .. '-0', '+', 'COUNT', ARGV[6])
local reply = {top, epoch, 1}
if mode == 'recover' then
  local first = entries[1] and tonumber(string.match(entries[1][1], '^(%d+)'))
  if first ~= after + 1 or #entries ~= top - after then
    return {top, epoch, 0}
  end
end
for _, entry in ipairs(entries) do
  reply[#reply + 1] = entry[1]
  reply[#reply + 1] = entry[2][2]
end
return reply
