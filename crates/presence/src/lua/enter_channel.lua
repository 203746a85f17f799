-- Records one connection's subscription to a channel, and publishes `join`
-- on the channel for the user's first subscription to it anywhere, in one
-- atomic step on the channel's bucket: concurrent subscriptions on any
-- number of instances send exactly one `join` per user.
--
-- KEYS[1] the channel's members hash, KEYS[2] the bucket's channel counts,
-- KEYS[3] the instance's member index in the bucket, KEYS[4] the bucket's
-- instance leases, KEYS[5] the channel's sharded publication channel.
-- ARGV[1] channel, ARGV[2] user id, ARGV[3] connection id, ARGV[4] instance
-- id, ARGV[5] lease ttl in ms, ARGV[6] the most subscribers the channel may
-- have (0: no limit), ARGV[7] the join/leave cap (0: none are sent to
-- subscribers), ARGV[8] the event channel (every `join` goes to the
-- bucket's event log and the bus, whatever the cap).
--
-- Returns {1, 1} entered and the user joined, {1, 0} entered (the user was
-- in already), {0, 0} the connection was in already (nothing changes:
-- entering is idempotent), {-1, held} the channel is full.
local channel, user_id, connection_id = ARGV[1], ARGV[2], ARGV[3]
local field = channel .. ' ' .. connection_id
if redis.call('HEXISTS', KEYS[3], field) == 1 then
  return {0, 0}
end
local max = tonumber(ARGV[6]) or 0
if max > 0 then
  local held = tonumber(redis.call('HGET', KEYS[2], channel) or '0')
  if held >= max then
    return {-1, held}
  end
end
-- The reaper finds the entry through this instance's lease in this bucket.
touch_lease(KEYS[4], ARGV[4], tonumber(ARGV[5]))
local cap = tonumber(ARGV[7]) or 0
redis.call('HSET', KEYS[3], field, string.format('%d', cap) .. '|' .. user_id)
redis.call('HINCRBY', KEYS[2], channel, 1)
if redis.call('HINCRBY', KEYS[1], user_id, 1) > 1 then
  return {1, 0}
end
if cap > 0 and redis.call('HLEN', KEYS[1]) <= cap then
  redis.call('SPUBLISH', KEYS[5], member_frame('join', channel, user_id))
end
emit(event_log(ARGV[8], KEYS[2]), 'join', user_id, connection_id, ARGV[4], nil, channel)
return {1, 1}
