-- Trims a bucket's event log and "last seen" to their windows.
--
-- KEYS[1] the bucket's log (stream), KEYS[2] its last-seen ZSET.
-- ARGV[1] the retention (ms): entries older than that by Redis's clock go,
-- except the newest, which always stays (the next event's seq follows it).
-- ARGV[2] the last-seen window (ms): users last seen before it are forgotten.
--
-- Returns how many entries were trimmed.
local now = redis_now()
local trimmed = 0
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if newest then
  local dash = string.find(newest[1], '-', 1, true)
  local oldest = now - tonumber(ARGV[1])
  local threshold = string.format('%.0f-0', oldest)
  if tonumber(string.sub(newest[1], 1, dash - 1)) < oldest then
    threshold = newest[1]
  end
  trimmed = redis.call('XTRIM', KEYS[1], 'MINID', threshold)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('(%.0f', now - tonumber(ARGV[2])))
return trimmed
