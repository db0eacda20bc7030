-- Settle: give back the reservation's hold if it still has one, and count what the call used.
-- A reservation that already expired (its hold given back) or is unknown only adds its use, so
-- nothing is subtracted twice. The settled id is then kept as a tombstone ("-") until
-- tombstone_until_ms, so that a settle sent again (its first attempt timed out but ran) is
-- recognised and ignored. An empty id counts use that was never held here (counted elsewhere
-- while this store was unreachable). A per-minute counter ("m<window>:<limit>") of a window
-- that is over is not counted (its settled use reads 0).
-- ARGV: keep_until_secs, id, tombstone_until_ms, n, (counter, amount) * n
-- Reply: {status, used * n}. Status 0 the user-period is not initialised (nothing written: its
--        next seed, from the ledger, includes this call); 1 counted, no hold found; 2 counted and
--        the hold given back; 3 already settled, nothing done. Statuses 1 and 2 are followed by
--        the settled use of each counter as this script left it, in the order of the arguments:
--        read in the same atomic step as the increment, so that alerts know exactly which call
--        crossed a threshold.
if not initialised() then
  return {0}
end

local id = ARGV[2]
local found = 1
if id ~= '' then
  local payload = redis.call('HGET', KEYS[1], 'h:' .. id)
  if payload == '-' then
    return {3}
  end
  if payload and give_back(id) then
    found = 2
  end
  redis.call('HSET', KEYS[1], 'h:' .. id, '-')
  redis.call('ZADD', KEYS[2], ARGV[3], id)
end
local names, amounts = pairs_from(5, tonumber(ARGV[4]))
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
keep_until(ARGV[1])
return reply
