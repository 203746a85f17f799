-- Removes every connection one instance holds, with the same events as
-- unregister.lua for each, in one atomic step. Meant for graceful shutdown
-- and for a restart under the same instance id; tens of thousands of
-- connections take a fraction of a second.
--
-- KEYS[1] instance index, KEYS[2] online set, KEYS[3] connection counter.
-- ARGV[1] event channel, ARGV[2] instance id, ARGV[3] at_ms as a decimal
-- string, ARGV[4] user hash key prefix.
--
-- The user hash keys are built here from the index, so they are not among
-- KEYS and span many slots. Single-node Redis allows that; Redis Cluster
-- support will need this split per slot (see the crate docs).
--
-- Returns how many connections were removed.
local channel, instance_id, at_ms, user_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local entries = redis.call('HGETALL', KEYS[1])
local removed = 0
for i = 1, #entries, 2 do
  local connection_id, user_id = entries[i], entries[i + 1]
  local user_key = user_prefix .. user_id .. '}'
  local value = redis.call('HGET', user_key, connection_id)
  -- Only what this instance holds: a connection id another instance
  -- registered first stays with that instance.
  if value and instance_of(value) == instance_id then
    redis.call('HDEL', user_key, connection_id)
    redis.call('DECR', KEYS[3])
    removed = removed + 1
    redis.call('PUBLISH', channel, event('disconnected', user_id, connection_id, instance_id, at_ms))
    if redis.call('HLEN', user_key) == 0 then
      redis.call('SREM', KEYS[2], user_id)
      redis.call('PUBLISH', channel, event('offline', user_id, connection_id, instance_id, at_ms))
    end
  end
end
redis.call('DEL', KEYS[1])
return removed
