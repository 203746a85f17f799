-- Registers one connection, and emits (logs and publishes) `connected` then, for the user's
-- first connection, `online`, in the same atomic step.
--
-- KEYS[1] user hash, and of the user's bucket: KEYS[2] the instance's index,
-- KEYS[3] online set, KEYS[4] connection counter, KEYS[5] instance leases,
-- KEYS[6] the user's block (a string holding the reason, expiring with it),
-- KEYS[7] the user's server-side subscriptions (a set).
-- ARGV[1] event channel, ARGV[2] user id, ARGV[3] connection id,
-- ARGV[4] instance id, ARGV[5] connected_at_ms as a decimal string,
-- ARGV[6] lease ttl in ms, ARGV[7] the most connections the user may hold
-- across every instance (0: no limit), ARGV[8] '1' to refuse a blocked user,
-- ARGV[9] '1' to answer with the user's server-side subscriptions.
--
-- Returns 1 when the connection was added, 0 when the user already had it
-- (then nothing is published and nothing changes but a lost index entry:
-- registering is idempotent), each as {1 or 0, {channel...}} with ARGV[9] (read in the
-- same step, so a server-side Subscribe either is in that list or finds
-- the connection registered), {-1, held} when the user already holds the limit, and
-- {-2, ms left, reason} when the user is blocked (then nothing changes
-- either). The user hash is the truth about every
-- instance's connections, and the count and the addition are one step, so
-- concurrent registrations on any number of instances admit exactly the limit.
local user_id, connection_id, instance_id, at_ms = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit = tonumber(ARGV[7]) or 0
local honour_block = ARGV[8] == '1'

-- A connection the user already has is answered by HSETNX below, whatever
-- the count or a block.
if (limit > 0 or honour_block) and redis.call('HEXISTS', KEYS[1], connection_id) == 0 then
  if honour_block then
    local reason = redis.call('GET', KEYS[6])
    if reason then
      return {-2, redis.call('PTTL', KEYS[6]), reason}
    end
  end
  if limit > 0 then
    local held = redis.call('HLEN', KEYS[1])
    if held >= limit then
      return {-1, held}
    end
  end
end
local function registered(added)
  if ARGV[9] == '1' then
    return {added, redis.call('SMEMBERS', KEYS[7])}
  end
  return added
end

if redis.call('HSETNX', KEYS[1], connection_id, at_ms .. '|' .. instance_id) == 0 then
  -- Registered already. Its instance's index must hold it too, or a purge
  -- of the instance (the reaper's, after it died) would leave it behind for
  -- good: a re-sync puts back an index entry that Redis lost on its own (an
  -- evicted key), which an atomic registration never leaves behind.
  if instance_of(redis.call('HGET', KEYS[1], connection_id)) == instance_id then
    redis.call('HSET', KEYS[2], connection_id, user_id)
  end
  return registered(0)
end
touch_lease(KEYS[5], instance_id, tonumber(ARGV[6]))
redis.call('HSET', KEYS[2], connection_id, user_id)
redis.call('INCR', KEYS[4])
local log = event_log(ARGV[1], KEYS[1])
emit(log, 'connected', user_id, connection_id, instance_id, at_ms)
-- The user hash is the truth; the online set is the index of non-empty ones.
if redis.call('HLEN', KEYS[1]) == 1 then
  redis.call('SADD', KEYS[3], user_id)
  emit(log, 'online', user_id, connection_id, instance_id, at_ms)
end
return registered(1)
