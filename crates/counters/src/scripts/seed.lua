-- Seed: write a user-period's settled totals (from the ledger) unless it is already
-- initialised, so that concurrent seeders and a late seed never overwrite live counters.
-- Anything left of a half-lost user-period (e.g. an orphaned expiry set) is cleared first.
-- ARGV: keep_until_secs, n, (counter, used) * n
-- Reply: 1 seeded, 0 already initialised (nothing written).
if initialised() then
  return 0
end

redis.call('DEL', HASH, EXP)
local names, amounts = pairs_from(3, tonumber(ARGV[2]))
redis.call('HSET', HASH, 'init', '1')
for i = 1, #names do
  if amounts[i] ~= '0' then
    redis.call('HSET', HASH, 'u:' .. names[i], amounts[i])
  end
end
keep_until(ARGV[1])
return 1
