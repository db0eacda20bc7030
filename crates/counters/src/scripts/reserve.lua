-- Reserve: give back expired holds, check every limit, and hold the amount on every counted
-- counter if all admit it.
-- Its arguments, from ARGV[at]: now_ms, expires_at_ms, keep_until_secs, id, window ('' for a
--   call without per-minute counters), n_counted, (counter, amount) * n_counted,
--   n_limits, (counter, max, requested) * n_limits
-- Per-minute counters are sent as "m:<limit>" and counted in the window open in KEYS[3]: the
-- call's, or a later one another instance opened (windows never move back).
-- Reply: {status, denied_limit, denied_used, denied_reserved, window, used_1, reserved_1, ...}
--   status 0: the user-period is not initialised (seed it, then retry); nothing else follows
--   status 1: admitted; status 2: denied by limit number denied_limit (1-based)
--   window: the window the call's per-minute counters count in (0: none)
--   then the standing of every counted counter, as this script left it.
-- Returns the reply and the index in ARGV after the reserve's arguments.
local function reserve(at)
  local n_counted = tonumber(ARGV[at + 5])
  local limits_at = at + 6 + 2 * n_counted
  local n_limits = tonumber(ARGV[limits_at])
  local next_at = limits_at + 1 + 3 * n_limits
  if not initialised() then
    return {0}, next_at
  end

  local now_ms = ARGV[at]
  local expired = redis.call('ZRANGEBYSCORE', EXP, '-inf', now_ms, 'LIMIT', 0, 256)
  for _, old in ipairs(expired) do
    give_back(old)
  end

  local window = 0
  if ARGV[at + 4] ~= '' then
    local open = redis.call('HGET', MINUTE, 'w')
    if open and tonumber(open) >= tonumber(ARGV[at + 4]) then
      window = open
    else
      redis.call('DEL', MINUTE)
      redis.call('HSET', MINUTE, 'w', ARGV[at + 4])
      window = ARGV[at + 4]
    end
    redis.call('EXPIRE', MINUTE, 120)
  end

  -- "m:<limit>" as the counter of the open window.
  local function in_window(name)
    if string.sub(name, 1, 2) == 'm:' then
      return 'm' .. window .. string.sub(name, 2)
    end
    return name
  end

  local names, amounts = pairs_from(at + 6, n_counted)
  for i = 1, #names do
    names[i] = in_window(names[i])
  end

  local denied, denied_used, denied_reserved = 0, 0, 0
  for j = 1, n_limits do
    local base = limits_at + 1 + 3 * (j - 1)
    local max, asked = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
    local hash, limit = place(in_window(ARGV[base]))
    local s = redis.call('HMGET', hash, 'u:' .. limit, 'r:' .. limit)
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
        local hash, limit = place(names[i])
        redis.call('HINCRBY', hash, 'r:' .. limit, amounts[i])
        held[#held + 1] = names[i] .. ' ' .. amounts[i]
      end
    end
    local id = ARGV[at + 3]
    redis.call('HSET', HASH, 'h:' .. id, table.concat(held, ' '))
    redis.call('ZADD', EXP, ARGV[at + 1], id)
    keep_until(ARGV[at + 2])
  end

  local reply = {status, denied, denied_used, denied_reserved, tonumber(window)}
  for i = 1, #names do
    local hash, limit = place(names[i])
    local s = redis.call('HMGET', hash, 'u:' .. limit, 'r:' .. limit)
    reply[#reply + 1] = tonumber(s[1]) or 0
    reply[#reply + 1] = tonumber(s[2]) or 0
  end
  return reply, next_at
end
