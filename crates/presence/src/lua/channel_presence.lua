-- Who is in a channel, read in one step so the counts and the list agree.
--
-- KEYS[1] the channel's members hash, KEYS[2] the bucket's channel counts.
-- ARGV[1] channel, ARGV[2] the most users to list.
--
-- Returns {users, connections} when the channel holds more users than
-- that, else {users, connections, {user id, count, ...}}.
local users = redis.call('HLEN', KEYS[1])
local connections = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if users > tonumber(ARGV[2]) then
  return {users, connections}
end
return {users, connections, redis.call('HGETALL', KEYS[1])}
