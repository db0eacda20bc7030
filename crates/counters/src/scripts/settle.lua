-- Settle: give back the reservation's hold if it still has one, and count what the call used.
-- A reservation that already expired (its hold given back) or is unknown only adds its use, so
-- nothing is subtracted twice. An empty id counts use that was never held here (counted
-- elsewhere while this store was unreachable).
-- ARGV: keep_until_secs, id, n, (counter, amount) * n
-- Reply: 0 the user-period is not initialised (nothing written: its next seed, from the ledger,
--        includes this call); 1 counted, no hold found; 2 counted and the hold given back.
if not initialised() then
  return 0
end

local found = 1
if ARGV[2] ~= '' and give_back(ARGV[2]) then
  found = 2
end
local names, amounts = pairs_from(4, tonumber(ARGV[3]))
for i = 1, #names do
  if amounts[i] ~= '0' then
    redis.call('HINCRBY', KEYS[1], 'u:' .. names[i], amounts[i])
  end
end
keep_until(ARGV[1])
return found
