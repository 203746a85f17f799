-- Publishes one publication of a namespace with history, in one step on the
-- channel's bucket: the next offset, the entry in the history, the sharded
-- publish (so a subscriber that reads the history and then the live stream
-- sees no gap and no doubling), and the idempotency key when there is one.
--
-- KEYS[1] P..'history:'..channel  list: `<offset> <data>`, oldest first, the
--                                  last ARGV[1]; its offsets follow one
--                                  another up to meta's `o`
-- KEYS[2] P..'meta:'..channel     hash: e = epoch, o = the last offset
-- KEYS[3] P..'pub:'..channel      the sharded channel
-- then, in this order, when asked for:
--   P..'idem:'..channel..' '..key   (ARGV[10] = '1': an idempotency key)
--   P..'user:'..user_id             (ARGV[11] = '1': a personal channel, in
--                                    its user's bucket; the answer counts the
--                                    user's connections, as Send does)
-- ARGV[1] history size, ARGV[2] history ttl (ms), ARGV[3] meta ttl (ms),
-- ARGV[4] an epoch for a history that starts now,
-- ARGV[5] the frame's head (up to its offset), ARGV[6] what goes between
-- offset and data, ARGV[7] the data, ARGV[8] the frame's end
-- (pulse_protocol::history), ARGV[9] the idempotency window (ms).
-- The sharded channel gets `<offset> <epoch> <frame>` (fanout.rs splits it).
-- Returns {offset, epoch, receivers, 1}, or the first call's
-- {offset, epoch, receivers, 0} for a key seen within the window;
-- receivers are the instances subscribed, or the user's connections.
local next_key = 4
local idem, user
if ARGV[10] == '1' then
  idem = KEYS[next_key]
  next_key = next_key + 1
end
if ARGV[11] == '1' then
  user = KEYS[next_key]
end
if idem then
  local first = redis.call('GET', idem)
  if first then
    local offset, epoch, receivers = string.match(first, '^(%d+) (%S+) (%d+)$')
    return {tonumber(offset), epoch, tonumber(receivers), 0}
  end
end
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  -- A history starts: whatever the list holds is from a lost one.
  epoch = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 'o', 1)
redis.call('RPUSH', KEYS[1], offset .. ' ' .. ARGV[7])
redis.call('LTRIM', KEYS[1], '-' .. ARGV[1], -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local frame = ARGV[5] .. offset .. ARGV[6] .. ARGV[7] .. ARGV[8]
local receivers = redis.call('SPUBLISH', KEYS[3], offset .. ' ' .. epoch .. ' ' .. frame)
if user then
  receivers = redis.call('HLEN', user)
end
if idem then
  redis.call('SET', idem, offset .. ' ' .. epoch .. ' ' .. receivers, 'PX', ARGV[9])
end
return {offset, epoch, receivers, 1}
