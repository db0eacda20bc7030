-- Release: give the reservation's hold back; releasing twice, after expiry or after a settle
-- does nothing.
-- ARGV: id
-- Reply: 1 the hold was given back, 0 there was none.
if redis.call('HGET', HASH, 'h:' .. ARGV[1]) == '-' then
  return 0
end
if give_back(ARGV[1]) then
  return 1
end
return 0
