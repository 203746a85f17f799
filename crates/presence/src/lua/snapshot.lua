-- One bucket's online users with their connections, and where its event log
-- is, in one step: watching the log from that point misses nothing the
-- snapshot does not hold, and repeats nothing it does.
--
-- KEYS[1] the bucket's online set, KEYS[2] its event log.
-- ARGV[1] the bucket's user hash key prefix.
--
-- Returns {newest log id or '', then for each user: user id, how many
-- connections (as text), then connection id, value for each}.
local out = { '' }
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if newest then
  out[1] = newest[1]
end
for _, user_id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local hash = redis.call('HGETALL', ARGV[1] .. user_id)
  table.insert(out, user_id)
  table.insert(out, string.format('%d', #hash / 2))
  for _, item in ipairs(hash) do
    table.insert(out, item)
  end
end
return out
