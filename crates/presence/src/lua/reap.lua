-- Removes, from one bucket, the connections and channel memberships of
-- instances whose lease there has expired (died without saying goodbye: kill -9, a lost node, a cut
-- network), with `disconnected` and `offline` events, in one atomic step.
-- Several presence replicas may run it at once: Redis runs scripts on a slot
-- one at a time, so each (instance, bucket) is reaped exactly once and its
-- events are published exactly once. A lease's time runs only while the
-- Redis process holding it does (see lease_clock in the prelude).
--
-- KEYS[1] the bucket's instance leases, KEYS[2] its online set, KEYS[3] its
-- connection counter.
-- ARGV[1] event channel, ARGV[2] the bucket's instance index key prefix,
-- ARGV[3] its user hash key prefix, ARGV[4] the most instances to reap in
-- this call.
--
-- Returns a flat list: instance id, connections removed, for each reaped
-- one (its channel memberships go too, with a `leave` for each user's last).
local now, now_digits = redis_now()
-- Time Redis was not there to count (a restart with data, a failover) is
-- given back to the leases first, so no live instance is reaped for it.
lease_clock(KEYS[1], now)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[4]))
local reaped = {}
local log = event_log(ARGV[1], KEYS[1])
for _, instance_id in ipairs(expired) do
  local removed = purge_instance(ARGV[2] .. instance_id, KEYS[2], KEYS[3], log, instance_id, now_digits, ARGV[3])
  purge_members(bucket_prefix(KEYS[1]), instance_id, log)
  redis.call('ZREM', KEYS[1], instance_id)
  table.insert(reaped, instance_id)
  table.insert(reaped, removed)
end
return reaped
