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
