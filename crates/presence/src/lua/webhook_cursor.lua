-- Stores where a webhook target's delivery is, only for the lease holder,
-- so that a replica that lost the lease cannot move the cursor back.
--
-- KEYS[1] the lease, KEYS[2] the cursor (same slot: `{<target>}`).
-- ARGV[1] the holder, ARGV[2] the position.
--
-- Returns 1 when stored, 0 when the holder does not hold the lease.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
