-- Shared by every counter script. KEYS[1] is a user-period's counter hash, KEYS[2] the sorted
-- set of its reservation ids scored by expiry (unix milliseconds), KEYS[3] the user's counters
-- of the open minute window. In the period's hash:
--   init        present once the user-period holds its full totals (seeded or new)
--   u:<limit>   settled use of a counter
--   r:<limit>   amounts held by reservations in flight
--   h:<id>      what reservation <id> holds: "<limit> <amount> <limit> <amount> ...", or "-"
--               once it is settled (a tombstone, removed when its expiry time comes)
-- A counter of one of the user's keys is named "k:<key id>:<limit>". A per-minute counter is
-- named "m<window>:<limit>" (window: minutes since the epoch) and lives in KEYS[3] as
-- u:<limit> and r:<limit>, beside "w", the window open there; a counter of a window that is no
-- longer open is gone, and is neither read nor written. KEYS[3] expires two minutes after its
-- last reserve.
-- Amounts travel as decimal strings and are only ever changed with HINCRBY, so they stay exact
-- 64-bit integers; Lua numbers (doubles) are used only to compare.

-- The hash and field suffix of counter `name`, or nil for a per-minute counter of a window
-- that is over.
local function place(name)
  local window, limit = string.match(name, '^m(%d+):(.+)$')
  if not window then
    return KEYS[1], name
  end
  if redis.call('HGET', KEYS[3], 'w') ~= window then
    return nil
  end
  return KEYS[3], limit
end

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
    local hash, limit = place(words[i])
    if hash then
      redis.call('HINCRBY', hash, 'r:' .. limit, '-' .. words[i + 1])
    end
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

