-- Hands a command to every instance holding connections of one user (or
-- only the instance holding one connection), in one step.
--
-- KEYS[1] user hash.
-- ARGV[1] command channel prefix ("<ns>:commands:{"), ARGV[2] the encoded
-- command, ARGV[3] one connection id, or '' for all of the user's.
--
-- The channel names are built here from the instance ids stored in the user
-- hash, so they are not among KEYS (channels never are).
--
-- Returns how many connections sit on instances that took the command: an
-- instance that nobody listens for (dead, or not yet subscribed) counts none.
local prefix, payload, only = ARGV[1], ARGV[2], ARGV[3]

local per_instance = {}
if only ~= '' then
  local value = redis.call('HGET', KEYS[1], only)
  if not value then
    return 0
  end
  per_instance[instance_of(value)] = 1
else
  for _, value in ipairs(redis.call('HVALS', KEYS[1])) do
    local instance_id = instance_of(value)
    per_instance[instance_id] = (per_instance[instance_id] or 0) + 1
  end
end

local reached = 0
for instance_id, count in pairs(per_instance) do
  if redis.call('PUBLISH', prefix .. instance_id .. '}', payload) > 0 then
    reached = reached + count
  end
end
return reached
