-- Removes every connection (and channel membership) one instance holds in
-- one bucket, with the same
-- events as unregister.lua for each, and its lease there, in one atomic
-- step; the caller runs it for every bucket. Meant for graceful shutdown and
-- for a restart under the same instance id.
--
-- KEYS[1] the bucket's instance index, KEYS[2] its online set, KEYS[3] its
-- connection counter, KEYS[4] its instance leases.
-- ARGV[1] event channel, ARGV[2] instance id, ARGV[3] at_ms as a decimal
-- string, ARGV[4] the bucket's user hash key prefix.
--
-- The user hash keys are built here from the index, so they are not among
-- KEYS; they are the bucket's, so in the same slot.
--
-- Returns how many connections were removed.
local log = event_log(ARGV[1], KEYS[1])
local removed = purge_instance(KEYS[1], KEYS[2], KEYS[3], log, ARGV[2], ARGV[3], ARGV[4])
purge_members(bucket_prefix(KEYS[4]), ARGV[2], log)
redis.call('ZREM', KEYS[4], ARGV[2])
return removed
