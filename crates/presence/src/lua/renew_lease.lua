-- Renews one instance's lease in one bucket until now + ttl (Redis's clock);
-- the caller runs it for every bucket.
--
-- KEYS[1] the bucket's instance leases (ZSET instance id -> deadline in ms).
-- ARGV[1] instance id, ARGV[2] ttl in ms.
--
-- Returns 1 when the instance held a live lease there that a renewal had
-- written, 0 when not: new, expired, reaped, re-created by a registration
-- since (unconfirmed), carried over a Redis restart or failover, or Redis
-- lost its data. On 0 the instance must make Redis hold exactly its
-- connections again (the reaper or the outage may have removed some).
local now = redis_now()
lease_clock(KEYS[1], now)
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], confirmed(now + tonumber(ARGV[2])), ARGV[1])
if deadline and tonumber(deadline) >= now and is_confirmed(deadline) then
  return 1
end
return 0
