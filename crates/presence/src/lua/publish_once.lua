-- Publishes a frame without history once per idempotency key.
-- KEYS[1] P..'pub:'..channel, KEYS[2] P..'idem:'..channel..' '..key
-- ARGV[1] the frame, ARGV[2] the idempotency window (ms).
-- Returns {receivers, 1}, or the first call's {receivers, 0}.
local first = redis.call('GET', KEYS[2])
if first then
  return {tonumber(first), 0}
end
local receivers = redis.call('SPUBLISH', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], receivers, 'PX', ARGV[2])
return {receivers, 1}
