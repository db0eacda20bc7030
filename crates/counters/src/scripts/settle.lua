-- Settle: give back the reservation's hold if it still has one, and count what the call used.
-- A reservation that already expired (its hold given back) or is unknown only adds its use, so
-- nothing is subtracted twice. The settled id is then kept as a tombstone ("-") until
-- tombstone_until_ms, so that a settle sent again (its first attempt timed out but ran) is
-- recognised and ignored. An empty id counts use that was never held here (counted elsewhere
-- while this store was unreachable). A per-minute counter ("m<window>:<limit>") of a window
-- that is over is not counted (its settled use reads 0).
-- Its arguments, from ARGV[at]: keep_until_secs, id, tombstone_until_ms, n,
--   (counter, amount) * n
-- Reply: {status, used * n}. Status 0 the user-period is not initialised (nothing written: its
--   next seed, from the ledger, includes this call); 1 counted, no hold found; 2 counted and the
--   hold given back; 3 already settled, nothing done. Statuses 1 and 2 are followed by the
--   settled use of each counter as this settle left it, in the order of the arguments: read in
--   the same atomic step as the increment, so that alerts know exactly which call crossed a
--   threshold.

-- Returns the reply and the index in ARGV after the settle's arguments.
local function settle(at)
  local n = tonumber(ARGV[at + 3])
  local next_at = at + 4 + 2 * n
  if not initialised() then
    return {0}, next_at
  end
  local id = ARGV[at + 1]
  local found = 1
  if id ~= '' then
    local payload = redis.call('HGET', HASH, 'h:' .. id)
    if payload == '-' then
      return {3}, next_at
    end
    if payload and give_back(id) then
      found = 2
    end
    redis.call('HSET', HASH, 'h:' .. id, '-')
    redis.call('ZADD', EXP, ARGV[at + 2], id)
  end
  local names, amounts = pairs_from(at + 4, n)
  local reply = {found}
  for i = 1, #names do
    local used = 0
    local hash, limit = place(names[i])
    if hash and amounts[i] ~= '0' then
      used = redis.call('HINCRBY', hash, 'u:' .. limit, amounts[i])
    elseif hash then
      used = tonumber(redis.call('HGET', hash, 'u:' .. limit) or '0')
    end
    reply[#reply + 1] = used
  end
  keep_until(ARGV[at])
  return reply, next_at
end
