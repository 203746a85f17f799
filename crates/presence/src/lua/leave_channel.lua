-- Ends one connection's subscription to a channel, and publishes `leave`
-- for the user's last one anywhere, in one atomic step on the channel's
-- bucket.
--
-- KEYS[1] the instance's member index in the channel's bucket, KEYS[2] the
-- channel's members hash, KEYS[3] the bucket's channel counts, KEYS[4] the
-- channel's sharded publication channel (the script builds the last three
-- from the bucket prefix; they are listed so a Cluster routes the call).
-- ARGV[1] channel, ARGV[2] connection id, ARGV[3] the event channel (a
-- `leave` goes to the bucket's event log and the bus too). The instance id
-- is the index key's end (`...cmi:<instance_id>`).
--
-- Returns 0 when the connection was not in the channel, 1 when it was, 2
-- when it was and the user left.
local channel = ARGV[1]
local field = channel .. ' ' .. ARGV[2]
local value = redis.call('HGET', KEYS[1], field)
if not value then
  return 0
end
redis.call('HDEL', KEYS[1], field)
local instance_id = string.match(KEYS[1], '}:cmi:(.*)$')
return 1 + leave_member(bucket_prefix(KEYS[1]), channel, value, ARGV[2], instance_id,
  event_log(ARGV[3], KEYS[1]))
