-- Takes or renews a webhook target's delivery lease.
--
-- KEYS[1] the lease. ARGV[1] the holder, ARGV[2] its time to live (ms), or
-- 0 to release it (a replica that shuts down, so another takes over now).
--
-- Returns 1 when the holder holds it now (or released it), 0 when another
-- holds it.
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
