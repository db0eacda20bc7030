-- Several operations in one call, applied one after the other in the order sent (those an
-- instance had waiting while its previous call was on its way), each on its own user-period:
-- KEYS holds the three keys of each one's user-period, in order.
-- ARGV: n_ops, then per operation its kind ('r' reserve, 's' settle) and its arguments.
-- Reply: one reply per operation, in order (see reserve.lua and settle.lua).
local replies = {}
local at = 2
for op = 1, tonumber(ARGV[1]) do
  use_keys(3 * (op - 1) + 1)
  local kind = ARGV[at]
  if kind == 'r' then
    replies[op], at = reserve(at + 1)
  elseif kind == 's' then
    replies[op], at = settle(at + 1)
  else
    return redis.error_reply('operation ' .. op .. ': unknown kind ' .. tostring(kind))
  end
end
return replies
