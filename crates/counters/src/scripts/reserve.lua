-- Reserve: give back expired holds, check every limit the plan sets, and hold the amount on
-- every counted counter if all admit it.
-- ARGV: now_ms, expires_at_ms, keep_until_secs, id,
--       n_counted, (counter, amount) * n_counted,
--       n_limits, (counter, max, requested) * n_limits
-- Reply: {status, denied_limit, denied_used, denied_reserved, used_1, reserved_1, ...}
--   status 0: the user-period is not initialised (seed it, then retry); nothing else follows
--   status 1: admitted; status 2: denied by limit number denied_limit (1-based)
--   then the standing of every counted counter, as this script left it.
if not initialised() then
  return {0}
end

local now_ms = ARGV[1]
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, 256)
for _, old in ipairs(expired) do
  give_back(old)
end

local names, amounts, at = pairs_from(6, tonumber(ARGV[5]))
local n_limits = tonumber(ARGV[at])
local denied, denied_used, denied_reserved = 0, 0, 0
for j = 1, n_limits do
  local base = at + 1 + 3 * (j - 1)
  local limit, max, asked = ARGV[base], tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local s = redis.call('HMGET', KEYS[1], 'u:' .. limit, 'r:' .. limit)
  local used, reserved = tonumber(s[1]) or 0, tonumber(s[2]) or 0
  if used + reserved + asked > max then
    denied, denied_used, denied_reserved = j, used, reserved
    break
  end
end

local status = 2
if denied == 0 then
  status = 1
  local held = {}
  for i = 1, #names do
    if amounts[i] ~= '0' then
      redis.call('HINCRBY', KEYS[1], 'r:' .. names[i], amounts[i])
      held[#held + 1] = names[i] .. ' ' .. amounts[i]
    end
  end
  local id = ARGV[4]
  redis.call('HSET', KEYS[1], 'h:' .. id, table.concat(held, ' '))
  redis.call('ZADD', KEYS[2], ARGV[2], id)
  keep_until(ARGV[3])
end

local reply = {status, denied, denied_used, denied_reserved}
for i = 1, #names do
  local s = redis.call('HMGET', KEYS[1], 'u:' .. names[i], 'r:' .. names[i])
  reply[#reply + 1] = tonumber(s[1]) or 0
  reply[#reply + 1] = tonumber(s[2]) or 0
end
return reply
