-- Removes every connection one instance holds, with the same events as
-- unregister.lua for each, and its lease, in one atomic step. Meant for
-- graceful shutdown and for a restart under the same instance id; tens of
-- thousands of connections take a fraction of a second.
--
-- KEYS[1] instance index, KEYS[2] online set, KEYS[3] connection counter,
-- KEYS[4] instance leases.
-- ARGV[1] event channel, ARGV[2] instance id, ARGV[3] at_ms as a decimal
-- string, ARGV[4] user hash key prefix.
--
-- The user hash keys are built here from the index, so they are not among
-- KEYS and span many slots. Single-node Redis allows that; Redis Cluster
-- support will need this split per slot (see the crate docs).
--
-- Returns how many connections were removed.
local removed = purge_instance(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[2])
return removed
