-- Unregisters one connection, and emits (logs and publishes) `disconnected` then, for the
-- user's last connection, `offline`, in the same atomic step.
--
-- KEYS[1] user hash, KEYS[2] online set, KEYS[3] connection counter.
-- ARGV[1] event channel, ARGV[2] user id, ARGV[3] connection id,
-- ARGV[4] at_ms as a decimal string, ARGV[5] the bucket's instance index key prefix.
--
-- The instance index key is built here from the instance id stored in the
-- user hash, so it is not among KEYS; the prefix is the user's bucket's, so
-- it is in the same slot as KEYS (which Redis Cluster requires).
--
-- Returns 1 when the connection was removed, 0 when it was unknown (then
-- nothing changes and nothing is published: unregistering is idempotent).
local channel, user_id, connection_id, at_ms, instance_prefix =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local value = redis.call('HGET', KEYS[1], connection_id)
if not value then
  return 0
end
local instance_id = instance_of(value)
redis.call('HDEL', KEYS[1], connection_id)
redis.call('HDEL', instance_prefix .. instance_id, connection_id)
redis.call('DECR', KEYS[3])
local log = event_log(channel, KEYS[1])
emit(log, 'disconnected', user_id, connection_id, instance_id, at_ms)
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], user_id)
  emit(log, 'offline', user_id, connection_id, instance_id, at_ms)
end
return 1
