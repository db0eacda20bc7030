-- Shared by every counter script. KEYS[1] is a user-period's counter hash, KEYS[2] the sorted
-- set of its reservation ids scored by expiry (unix milliseconds). In the hash:
--   init        present once the user-period holds its full totals (seeded or new)
--   u:<limit>   settled use of a counter
--   r:<limit>   amounts held by reservations in flight
--   h:<id>      what reservation <id> holds: "<limit> <amount> <limit> <amount> ...", or "-"
--               once it is settled (a tombstone, removed when its expiry time comes)
-- Amounts travel as decimal strings and are only ever changed with HINCRBY, so they stay exact
-- 64-bit integers; Lua numbers (doubles) are used only to compare.

-- Gives a reservation's held amounts back (or drops its tombstone). Returns true if it was
-- still held.
local function give_back(id)
  redis.call('ZREM', KEYS[2], id)
  local payload = redis.call('HGET', KEYS[1], 'h:' .. id)
  if not payload then
    return false
  end
  if payload == '-' then
    redis.call('HDEL', KEYS[1], 'h:' .. id)
    return false
  end
  local words = {}
  for word in string.gmatch(payload, '%S+') do
    words[#words + 1] = word
  end
  for i = 1, #words - 1, 2 do
    redis.call('HINCRBY', KEYS[1], 'r:' .. words[i], '-' .. words[i + 1])
  end
  redis.call('HDEL', KEYS[1], 'h:' .. id)
  return true
end

-- Both keys live until the period is over plus a grace (unix seconds).
local function keep_until(at_secs)
  redis.call('EXPIREAT', KEYS[1], at_secs)
  redis.call('EXPIREAT', KEYS[2], at_secs)
end

local function initialised()
  return redis.call('HEXISTS', KEYS[1], 'init') == 1
end

-- Reads "<name> <amount>" pairs from ARGV starting at `from`; returns names, amounts, next index.
local function pairs_from(from, count)
  local names, amounts = {}, {}
  for i = 1, count do
    names[i] = ARGV[from + 2 * (i - 1)]
    amounts[i] = ARGV[from + 2 * (i - 1) + 1]
  end
  return names, amounts, from + 2 * count
end

