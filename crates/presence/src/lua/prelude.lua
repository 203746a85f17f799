-- Shared by every presence script; the Rust side prepends it to each one.

-- One PresenceEvent as the JSON the Rust side decodes. The ids go through
-- cjson.encode, so quotes, backslashes and control characters are escaped.
-- at_ms arrives as a decimal string and is spliced in as it is: cjson prints
-- numbers with %.14g, which would round millisecond timestamps past 14 digits
-- (and Lua numbers are doubles, exact only up to 2^53). `id` is the event's
-- `b<bucket>-<ms>-<seq>`, `prev` the log entry before it; `channel` only
-- for join and leave.
local function event(kind, user_id, connection_id, instance_id, at_ms, id, prev, channel)
  local text = '{"user_id":' .. cjson.encode(user_id)
    .. ',"kind":"' .. kind
    .. '","connection_id":' .. cjson.encode(connection_id)
    .. ',"instance_id":' .. cjson.encode(instance_id)
    .. ',"at_ms":' .. at_ms
    .. ',"id":"' .. id .. '","prev":"' .. prev .. '"'
  if channel then
    text = text .. ',"channel":' .. cjson.encode(channel)
  end
  return text .. '}'
end

-- The bucket prefix `<ns>:{b<k>}:` of any key of the bucket.
local function bucket_prefix(key)
  return string.match(key, '^(.-}:)')
end

-- The one-letter kind a log entry stores (`k`), as pulse_presence::event_log
-- reads it back.
local LOG_KINDS = { connected = 'c', disconnected = 'd', online = 'n', offline = 'f', join = 'j', leave = 'l' }

-- The durable event log of a bucket: the stream `<prefix>events`, one entry
-- per event, id `<ms>-<seq>` (seq counts the bucket's events from 1 without
-- a hole; ms is Redis's clock, never less than the previous entry's), fields
-- k (kind), u (user), c (connection), i (instance), t (at_ms), h (the
-- channel of a join or leave, else empty: every entry has the same fields,
-- which the stream stores once). Nothing here
-- trims it: pulse-presence trims entries older than the retention, always
-- keeping the last one, so the next seq is always the last entry's + 1.
-- `<prefix>seen` (ZSET user -> at_ms of their last offline) is "last seen".
-- A script makes one table with event_log and passes it to emit for each
-- event; the table remembers where the log is between them.
local function event_log(channel, any_bucket_key)
  local prefix = bucket_prefix(any_bucket_key)
  return {
    channel = channel,
    stream = prefix .. 'events',
    seen = prefix .. 'seen',
    bucket = string.match(prefix, '{b(%d+)}:$'),
  }
end

-- Appends one event to the bucket's log and publishes it on the bus, in the
-- same step as the state change that calls it. `at_ms` nil: Redis's clock.
local function emit(log, kind, user_id, connection_id, instance_id, at_ms, channel)
  if not log.prev then
    local time = redis.call('TIME')
    log.ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    log.seq = 0
    log.prev = '0-0'
    local last = redis.call('XREVRANGE', log.stream, '+', '-', 'COUNT', 1)[1]
    if last then
      local dash = string.find(last[1], '-', 1, true)
      log.ms = math.max(log.ms, tonumber(string.sub(last[1], 1, dash - 1)))
      log.seq = tonumber(string.sub(last[1], dash + 1))
      log.prev = last[1]
    end
  end
  log.seq = log.seq + 1
  local id = string.format('%.0f-%.0f', log.ms, log.seq)
  at_ms = at_ms or string.format('%.0f', log.ms)
  redis.call('XADD', log.stream, id, 'k', LOG_KINDS[kind], 'u', user_id,
    'c', connection_id, 'i', instance_id, 't', at_ms, 'h', channel or '')
  redis.call('PUBLISH', log.channel,
    event(kind, user_id, connection_id, instance_id, at_ms, 'b' .. log.bucket .. '-' .. id, log.prev, channel))
  log.prev = id
  if kind == 'offline' then
    redis.call('ZADD', log.seen, at_ms, user_id)
  end
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

-- Lease deadlines (the scores of a bucket's `instances` zset) are
-- milliseconds of Redis's clock. A renewal writes a whole number; a deadline
-- that a renewal did not write (a registration made it, or Redis restarted
-- under it) carries an extra half millisecond and is "unconfirmed": the next
-- renewal answers "not held", so the instance re-syncs. Doubles hold these
-- halves exactly (deadlines are far below 2^52).
local function confirmed(deadline_ms)
  return string.format('%.1f', deadline_ms)
end

local function unconfirmed(deadline_ms)
  return string.format('%.1f', math.floor(deadline_ms) + 0.5)
end

local function is_confirmed(score)
  local deadline = tonumber(score)
  return deadline == math.floor(deadline)
end

-- How long after a bucket's lease clock was last written a script looks at
-- it again (INFO costs a few microseconds). A look that is skipped writes
-- nothing, so a restart or a failover is still seen, at most this much later,
-- having cost the leases no more than this.
local LEASE_CLOCK_CHECK_MS = 100

-- Lease time runs only while the Redis process that holds the deadlines
-- runs. Each bucket keeps `<ns>:{b<k>}:lease_clock` = "<ms>|<run_id>": when
-- this process (INFO's run_id) last looked at the bucket's leases. When a
-- script finds another process's run_id there, Redis was restarted with its
-- data (RDB or AOF) or a replica was promoted: nobody could renew meanwhile,
-- so every deadline in the bucket moves later by the time since that last
-- look (each lease gets back the time it had left), and is marked
-- unconfirmed, so that every instance re-syncs at its next renewal (the data
-- may be older than the last writes). A dead instance's lease then runs out
-- as it would have, and it is reaped. Every lease script calls this first,
-- with `now` from redis_now().
local function lease_clock(leases_key, now)
  -- Every key of a bucket starts `<ns>:{b<k>}:` (the namespace has no braces).
  local clock_key = string.match(leases_key, '^(.-}:)') .. 'lease_clock'
  local mark = redis.call('GET', clock_key)
  local at, run_id
  if mark then
    local bar = string.find(mark, '|', 1, true)
    if bar then
      at = tonumber(string.sub(mark, 1, bar - 1))
      run_id = string.sub(mark, bar + 1)
    end
  end
  if at and now >= at and now - at < LEASE_CLOCK_CHECK_MS then
    return
  end
  local current = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  if at and run_id ~= current then
    local gap = math.max(now - at, 0)
    local leases = redis.call('ZRANGE', leases_key, 0, -1, 'WITHSCORES')
    for i = 1, #leases, 2 do
      redis.call('ZADD', leases_key, unconfirmed(tonumber(leases[i + 1]) + gap), leases[i])
    end
  end
  redis.call('SET', clock_key, now .. '|' .. current)
end

-- Makes sure an instance that registers holds a lease, so that if it dies
-- right after, the reaper still finds what it registered. A lease made here
-- is unconfirmed: if the instance had lost its lease (reaped while it
-- stalled), its next renewal says so, however many of its registrations
-- re-created it in however many buckets meanwhile.
local function touch_lease(instances_key, instance_id, ttl_ms)
  local now = redis_now()
  local deadline = redis.call('ZSCORE', instances_key, instance_id)
  if deadline and tonumber(deadline) >= now then
    return
  end
  -- Before writing a deadline, let the clock move the saved ones (a
  -- restart can have revived this very lease).
  lease_clock(instances_key, now)
  deadline = redis.call('ZSCORE', instances_key, instance_id)
  if not deadline or tonumber(deadline) < now then
    redis.call('ZADD', instances_key, unconfirmed(now + ttl_ms), instance_id)
  end
end

-- Removes every connection one instance holds in one bucket, emitting
-- `disconnected` and, for each user's last connection, `offline` to `log`
-- (the bucket's event_log); deletes its index there. Every key is in the bucket's slot: the user hashes are
-- built from the bucket's user prefix. Returns how many connections were
-- removed.
local function purge_instance(index_key, online_key, counter_key, log, instance_id, at_ms, user_prefix)
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
      emit(log, 'disconnected', user_id, connection_id, instance_id, at_ms)
      if redis.call('HLEN', user_key) == 0 then
        redis.call('SREM', online_key, user_id)
        emit(log, 'offline', user_id, connection_id, instance_id, at_ms)
      end
    end
  end
  redis.call('DEL', index_key)
  return removed
end

-- Channel membership (per-channel presence). A channel's keys live in its
-- bucket (bucket_of(channel)), prefix P = `<ns>:{b<k>}:`:
--   P..'members:'..channel  user id -> how many of their connections are subscribed
--   P..'chans'              channel -> how many connections are subscribed (the bucket's active channels)
--   P..'cmi:'..instance     "<channel> <connection id>" -> "<cap>|<user id>": what an
--                           instance's connections hold in the bucket, for the reaper
--   P..'pub:'..channel      the sharded channel its publications, joins and leaves go on
-- A channel name holds no space, so the first one ends it. <cap> is the
-- namespace's join/leave limit when the entry was made: 0 sends none,
-- N sends them while the channel holds at most N users.

-- A `join` or `leave` frame, as pulse_protocol::channel::member_frame builds
-- it (the same JSON; cjson also escapes '/', which decodes the same).
local function member_frame(kind, channel, user_id)
  return '{"type":"' .. kind .. '","channel":' .. cjson.encode(channel)
    .. ',"user_id":' .. cjson.encode(user_id) .. '}'
end

-- Takes one connection of the user out of a channel whose index entry was
-- `value`, sending `leave` for the user's last one (to the channel's
-- subscribers, within the namespace's cap, and to `log`, the bucket's event
-- log, always). Returns 1 when the user left, else 0.
local function leave_member(prefix, channel, value, connection_id, instance_id, log)
  local bar = string.find(value, '|', 1, true)
  local cap = tonumber(string.sub(value, 1, bar - 1)) or 0
  local user_id = string.sub(value, bar + 1)
  local chans = prefix .. 'chans'
  if redis.call('HINCRBY', chans, channel, -1) <= 0 then
    redis.call('HDEL', chans, channel)
  end
  local members = prefix .. 'members:' .. channel
  if redis.call('HINCRBY', members, user_id, -1) > 0 then
    return 0
  end
  local users = redis.call('HLEN', members)
  redis.call('HDEL', members, user_id)
  if cap > 0 and users <= cap then
    redis.call('SPUBLISH', prefix .. 'pub:' .. channel, member_frame('leave', channel, user_id))
  end
  emit(log, 'leave', user_id, connection_id, instance_id, nil, channel)
  return 1
end

-- Takes every channel membership an instance holds in one bucket out, with
-- a `leave` for each user's last one, and deletes its index there.
local function purge_members(prefix, instance_id, log)
  local index = prefix .. 'cmi:' .. instance_id
  local entries = redis.call('HGETALL', index)
  for i = 1, #entries, 2 do
    local field = entries[i]
    local space = string.find(field, ' ', 1, true)
    leave_member(prefix, string.sub(field, 1, space - 1), entries[i + 1],
      string.sub(field, space + 1), instance_id, log)
  end
  redis.call('DEL', index)
end
