-- Reads a bucket's event log after a point.
--
-- KEYS[1] the bucket's log (stream).
-- ARGV[1] the point to read after (`<ms>-<seq>`), ARGV[2] at most how many.
--
-- Returns {newest id or '', then for each entry: id, k, u, c, i, t, h}: the
-- newest entry is read in the same step, so an empty read tells whether the
-- log is where the reader left it.
local out = { '' }
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if newest then
  out[1] = newest[1]
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
for _, entry in ipairs(entries) do
  table.insert(out, entry[1])
  local fields = entry[2]
  for i = 2, #fields, 2 do
    table.insert(out, fields[i])
  end
end
return out
