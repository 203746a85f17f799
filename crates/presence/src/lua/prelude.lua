-- Shared by every presence script; the Rust side prepends it to each one.

-- One PresenceEvent as the JSON the Rust side decodes. The ids go through
-- cjson.encode, so quotes, backslashes and control characters are escaped.
-- at_ms arrives as a decimal string and is spliced in as it is: cjson prints
-- numbers with %.14g, which would round millisecond timestamps past 14 digits
-- (and Lua numbers are doubles, exact only up to 2^53).
local function event(kind, user_id, connection_id, instance_id, at_ms)
  return '{"user_id":' .. cjson.encode(user_id)
    .. ',"kind":"' .. kind
    .. '","connection_id":' .. cjson.encode(connection_id)
    .. ',"instance_id":' .. cjson.encode(instance_id)
    .. ',"at_ms":' .. at_ms .. '}'
end

-- A user hash value is "<connected_at_ms>|<instance_id>": the digits cannot
-- hold a '|', so everything after the first one is the instance id, whatever
-- it contains.
local function instance_of(value)
  local bar = string.find(value, '|', 1, true)
  if bar then
    return string.sub(value, bar + 1)
  end
  return ''
end

-- Redis's own clock, so that every instance and replica agrees on lease
-- deadlines whatever their clocks say: the number, and the same instant as
-- decimal digits for events.
local function redis_now()
  local time = redis.call('TIME')
  local ms = string.format('%03d', math.floor(tonumber(time[2]) / 1000))
  return tonumber(time[1]) * 1000 + tonumber(ms), time[1] .. ms
end

-- Makes sure an instance that registers holds a lease, so that if it dies
-- right after, the reaper still finds what it registered.
local function touch_lease(instances_key, instance_id, ttl_ms)
  local now = redis_now()
  local deadline = redis.call('ZSCORE', instances_key, instance_id)
  if not deadline or tonumber(deadline) < now then
    redis.call('ZADD', instances_key, now + ttl_ms, instance_id)
  end
end

-- Removes every connection one instance holds in one bucket, publishing
-- `disconnected` and, for each user's last connection, `offline`; deletes
-- its index there. Every key is in the bucket's slot: the user hashes are
-- built from the bucket's user prefix. Returns how many connections were
-- removed.
local function purge_instance(index_key, online_key, counter_key, channel, instance_id, at_ms, user_prefix)
  local entries = redis.call('HGETALL', index_key)
  local removed = 0
  for i = 1, #entries, 2 do
    local connection_id, user_id = entries[i], entries[i + 1]
    local user_key = user_prefix .. user_id
    local value = redis.call('HGET', user_key, connection_id)
    -- Only what this instance holds: a connection id another instance
    -- registered first stays with that instance.
    if value and instance_of(value) == instance_id then
      redis.call('HDEL', user_key, connection_id)
      redis.call('DECR', counter_key)
      removed = removed + 1
      redis.call('PUBLISH', channel, event('disconnected', user_id, connection_id, instance_id, at_ms))
      if redis.call('HLEN', user_key) == 0 then
        redis.call('SREM', online_key, user_id)
        redis.call('PUBLISH', channel, event('offline', user_id, connection_id, instance_id, at_ms))
      end
    end
  end
  redis.call('DEL', index_key)
  return removed
end
