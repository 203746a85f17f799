-- Takes or renews a webhook target's delivery lease.
--
-- KEYS[1] the lease. ARGV[1] the holder, ARGV[2] its time to live (ms).
--
-- Returns 1 when the holder holds it now, 0 when another does.
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
